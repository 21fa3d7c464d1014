"""Settings precedence (defaults < TOML file < RAYBORG_* env < flags) and readable errors."""

from __future__ import annotations

import os

import pytest

import rayborg.serve
from rayborg.cli import main as cli
from rayborg.settings import SettingsError, load_settings

FILE = """
[rayborg]
host = "10.0.0.1"
port = 1111
auth_strategy = "keystone"
policy_file = "/etc/rayborg/policy.yaml"
api_workers = 3

[rayborg.keystone]
auth_url = "http://keystone/v3"
username = "file-user"
"""


@pytest.fixture
def config(tmp_path, monkeypatch):
    """A config file named by $RAYBORG_CONFIG, in an environment without other RAYBORG_* variables."""
    for name in [n for n in os.environ if n.startswith("RAYBORG_")]:
        monkeypatch.delenv(name)
    path = tmp_path / "rayborg.toml"
    path.write_text(FILE)
    monkeypatch.setenv("RAYBORG_CONFIG", str(path))
    return path


def test_defaults_without_a_file(config, monkeypatch):
    monkeypatch.setenv("RAYBORG_CONFIG", str(config.parent / "missing.toml"))
    s = load_settings()
    assert (s.host, s.port, s.auth_strategy, s.api_workers) == ("127.0.0.1", 6666, "noauth", 1)
    assert s.public_url is None
    assert s.database_url.startswith("sqlite:///") and s.database_url.endswith("rayborg.db")


def test_file_then_env_then_flag(config, monkeypatch):
    s = load_settings()
    assert (s.host, s.port, s.auth_strategy, s.api_workers) == ("10.0.0.1", 1111, "keystone", 3)

    monkeypatch.setenv("RAYBORG_PORT", "2222")
    monkeypatch.setenv("RAYBORG_KEYSTONE__USERNAME", "env-user")
    s = load_settings()
    assert (s.host, s.port) == ("10.0.0.1", 2222)  # env beats file, file still fills the rest
    assert (s.keystone.auth_url, s.keystone.username) == ("http://keystone/v3", "env-user")

    s = load_settings(port=3333, host=None)  # a flag beats both; an unset flag (None) does not count
    assert (s.host, s.port) == ("10.0.0.1", 3333)


def test_top_level_keys_without_a_table(config):
    config.write_text('port = 4444\npublic_url = "https://cloud/accelerator"\n')
    s = load_settings()
    assert (s.port, s.public_url) == (4444, "https://cloud/accelerator")


def test_serve_flags_reach_the_settings(config, monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(rayborg.serve, "serve", lambda settings: seen.append(settings) or 0)
    monkeypatch.setenv("RAYBORG_HOST", "0.0.0.0")
    other = tmp_path / "other.toml"
    other.write_text("[rayborg]\nport = 5555\npolicy_file = '/other.yaml'\n")
    url = f"sqlite:///{tmp_path / 'x.db'}"
    assert cli(["--config", str(other), "serve", "--database-url", url, "--public-url", "http://p/acc",
                "--auth-strategy", "noauth", "--workers", "2"]) == 0
    s = seen[0]
    assert (s.host, s.port, s.policy_file) == ("0.0.0.0", 5555, "/other.yaml")  # env, --config file
    assert (s.database_url, s.public_url) == (url, "http://p/acc")
    assert (s.auth_strategy, s.api_workers) == ("noauth", 2)


@pytest.mark.parametrize("content, env, message", [
    ("port = ", {}, "config file"),
    ('port = "many"', {}, "port"),
    ("", {"RAYBORG_PORT": "many"}, "port"),
    ("", {"RAYBORG_AUTH_STRATEGY": "magic"}, "auth_strategy"),
    ('database_url = "nonsense"', {}, "not a database URL"),
    ('database_url = "mysql://db/x"', {}, "unsupported database"),
])
def test_bad_settings_are_one_readable_line(config, monkeypatch, capsys, content, env, message):
    config.write_text(content)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=message):
        load_settings()
    assert cli(["serve"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("rayborg serve: ") and message in err and "Traceback" not in err


def test_unreachable_database_is_one_readable_line(config, capsys):
    assert cli(["db", "current", "--database-url", "postgresql://nobody:secret@127.0.0.1:1/x"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("rayborg db: database postgresql://nobody:***@127.0.0.1:1/x")
    assert "secret" not in err

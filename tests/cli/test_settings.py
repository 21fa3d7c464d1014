"""Settings precedence (defaults < TOML file < RAYBORG_* env < flags) and readable errors."""

from __future__ import annotations

import os

import pytest

import rayborg.daemon
from rayborg.cli import main as cli
from rayborg.actor_runtime import runtime_config
from rayborg.settings import Settings, SettingsError, load_settings

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
    # only the default path may be missing (an explicit one that is missing is an error)
    monkeypatch.delenv("RAYBORG_CONFIG")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config.parent / "no-config-dir"))
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
    monkeypatch.setattr(rayborg.daemon, "serve", lambda settings: seen.append(settings) or 0)
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
    ("", {"RAYBORG_DRIVER_OPTIONS": "{not json"}, 'parsing value for field "driver_options"'),
    ("", {"RAYBORG_DRIVER_OPTIONS": '{"spdk": 3}'}, "driver_options.spdk: Input should be a valid dictionary"),
    ("[rayborg.driver_options.nvidia_vgpus]\nenabled_vgpu_types = []\n", {},
     "driver_options for unknown driver 'nvidia_vgpus'"),
    ("[rayborg]\ndriver_options = 3\n", {}, "driver_options: Input should be a valid dictionary"),
])
def test_bad_settings_are_one_readable_line(config, monkeypatch, capsys, content, env, message):
    config.write_text(content)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=message):
        load_settings()
    assert cli(["serve"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("rayborg serve: ") and message in err and "Traceback" not in err and err.count("\n") == 1


def test_unreachable_database_is_one_readable_line(config, capsys):
    assert cli(["db", "current", "--database-url", "postgresql://nobody:secret@127.0.0.1:1/x"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("rayborg db: database postgresql://nobody:***@127.0.0.1:1/x")
    assert "secret" not in err


DRIVER_FILE = """
[rayborg]
sysfs_root = "/srv/sys"
dev_root = "/srv/dev"

[rayborg.driver_options.nvidia_vgpu]
enabled_vgpu_types = ["nvidia-223"]
device_addresses = {"nvidia-223" = ["0000:af:00.0"]}

[rayborg.driver_options.xilinx_fpga]
tool = "/opt/xbmgmt"
program_timeout = 90

[rayborg.driver_options.bitstreams]
dir = "/var/lib/rayborg/bitstreams"
"""
VGPU = {"enabled_vgpu_types": ["nvidia-223"], "device_addresses": {"nvidia-223": ["0000:af:00.0"]}}


def test_driver_options_and_dev_root_from_the_file_reach_the_runtime_config(config):
    from rayborg.actor_runtime import runtime_config

    config.write_text(DRIVER_FILE)
    s = load_settings()
    assert (s.sysfs_root, s.dev_root) == ("/srv/sys", "/srv/dev")
    assert s.driver_options == {"nvidia_vgpu": VGPU, "xilinx_fpga": {"tool": "/opt/xbmgmt", "program_timeout": 90},
                                "bitstreams": {"dir": "/var/lib/rayborg/bitstreams"}}
    rc = runtime_config(s)
    assert (rc.sysfs_root, rc.dev_root, rc.driver_options) == ("/srv/sys", "/srv/dev", s.driver_options)
    host = rc.for_host("h1")  # what a HostAgent hands its HostDrivers
    assert host["dev_root"] == "/srv/dev" and host["options"]["bitstreams"] == {"dir": "/var/lib/rayborg/bitstreams"}


def test_driver_options_from_the_environment(config, monkeypatch):
    import json

    config.write_text(DRIVER_FILE)
    file_options = load_settings().driver_options
    monkeypatch.setenv("RAYBORG_DRIVER_OPTIONS", json.dumps({"spdk": {"socket": "/run/spdk.sock"},
                                                             "xilinx_fpga": {"program_timeout": 30}}))
    # env and file merge key by key (as for [rayborg.keystone]): env wins where both set a key
    assert load_settings().driver_options == file_options | {
        "spdk": {"socket": "/run/spdk.sock"}, "xilinx_fpga": {"tool": "/opt/xbmgmt", "program_timeout": 30}}
    config.write_text("")
    monkeypatch.setenv("RAYBORG_DRIVER_OPTIONS__PMEM", '{"pmem_namespaces": "ns0:ns200_0"}')
    monkeypatch.setenv("RAYBORG_DRIVER_OPTIONS__SPDK__TIMEOUT", "3")  # one key: a string
    monkeypatch.setenv("RAYBORG_DEV_ROOT", "/env/dev")
    s = load_settings()
    assert s.driver_options == {"spdk": {"socket": "/run/spdk.sock", "timeout": "3"},
                                "pmem": {"pmem_namespaces": "ns0:ns200_0"}, "xilinx_fpga": {"program_timeout": 30}}
    assert s.dev_root == "/env/dev"


# How many binder actors `rayborg serve` starts: one unless the operator says otherwise.
@pytest.mark.parametrize(("given", "expected"), [(None, 1), (3, 3)])
def test_binder_count(given, expected):
    settings = Settings(**({} if given is None else {"binder_count": given}), _env_file=None)
    assert runtime_config(settings).binder_count == expected


def test_binder_count_must_be_positive():
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        Settings(binder_count=0, _env_file=None)


# A Glance bitstream source without credentials of its own uses the [keystone] service user.
def test_glance_source_takes_the_keystone_service_user():
    from rayborg.settings import KeystoneOptions

    keystone = KeystoneOptions(auth_url="http://ks/v3", username="cyborg", password="pw", project_name="service",
                               region_name="R1")
    glance = {"glance_url": "http://glance:9292", "download_dir": "/var/tmp/bs"}
    s = Settings(keystone=keystone, driver_options={"bitstreams": glance, "spdk": {"socket": "/s"}}, _env_file=None)
    options = runtime_config(s).for_host("h1")["options"]
    assert options["bitstreams"] == {"auth_url": "http://ks/v3", "username": "cyborg", "password": "pw",
                                     "project_name": "service", "user_domain_id": "default",
                                     "project_domain_id": "default", "region_name": "R1", **glance}
    assert options["spdk"] == {"socket": "/s"} and s.driver_options["bitstreams"] == glance  # settings untouched
    # a source with its own credentials, a local directory, or no [keystone] user: as configured
    for source in ({**glance, "token": "t"}, {**glance, "auth_url": "http://other/v3", "username": "u"},
                   {"dir": "/srv/bs"}):
        s = Settings(keystone=keystone, driver_options={"bitstreams": source}, _env_file=None)
        assert runtime_config(s).driver_options["bitstreams"] == source
    assert Settings(driver_options={"bitstreams": glance}, _env_file=None).resolved_driver_options() == \
        {"bitstreams": glance}

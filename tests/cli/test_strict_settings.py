"""Strict settings (issue 14): a config file named explicitly must exist, every key of the file and
every RAYBORG_* variable must name a setting (the error names the closest one), `--config` works
after the command; `rayborg serve` refuses noauth beyond loopback unless it was asked for; a cut-off
pipe ends quietly and a failing command's last line follows --log-format."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from serve_process import ServeProcess

import rayborg.daemon
from rayborg.cli import main as cli
from rayborg.settings import Settings, SettingsError, exposure, load_settings, unknown_variables

REPO = Path(__file__).resolve().parents[2]
THIS = Path(__file__).name  # its misspelt names are on purpose


@pytest.fixture
def clean_env(tmp_path, monkeypatch):
    """No RAYBORG_* variables and no user config file; returns an (empty) config file's path."""
    for name in [n for n in os.environ if n.upper().startswith("RAYBORG_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    path = tmp_path / "rayborg.toml"
    path.write_text("")
    return path


@pytest.fixture
def served(monkeypatch):
    """The Settings `rayborg serve` would have served with (nothing starts)."""
    seen: list[Settings] = []
    monkeypatch.setattr(rayborg.daemon, "serve", lambda settings: seen.append(settings) or 0)
    return seen


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


# -- item 13: the config file ---------------------------------------------------------------------

@pytest.mark.parametrize("argv", [["--config", "{f}", "serve"], ["serve", "--config", "{f}"]],
                         ids=["before", "after"])
def test_a_named_config_file_that_is_missing_is_an_error(clean_env, served, capsys, argv):
    missing = clean_env.parent / "typo.toml"
    assert cli([a.format(f=missing) for a in argv]) == 1
    assert one_error_line(capsys) == f"rayborg serve: config file {missing} does not exist"
    assert served == []


def test_rayborg_config_naming_a_missing_file_is_an_error(clean_env, monkeypatch):
    monkeypatch.setenv("RAYBORG_CONFIG", str(clean_env.parent / "gone.toml"))
    with pytest.raises(SettingsError, match=r"config file .*gone\.toml does not exist"):
        load_settings()
    monkeypatch.delenv("RAYBORG_CONFIG")  # the default path may be absent
    assert load_settings().port == 6666


def test_config_after_the_command_is_read(clean_env, served):
    clean_env.write_text("port = 7777\n")
    assert cli(["serve", "--config", str(clean_env)]) == 0
    assert served[0].port == 7777
    # the command's --config is exported to it (and what it starts) only while it runs
    assert "RAYBORG_CONFIG" not in os.environ


@pytest.mark.parametrize("content, message", [
    ("prot = 1\n", "unknown key 'prot' (did you mean 'port'?)"),
    ("[rayborg]\nport = 1\nauth_stratgy = 'noauth'\n",
     "unknown key 'rayborg.auth_stratgy' (did you mean 'rayborg.auth_strategy'?)"),
    ("[keystone]\nauth_ur = 'http://ks/v3'\n",
     "unknown key 'keystone.auth_ur' (did you mean 'keystone.auth_url'?)"),
    ("[rayborg.keystone]\nusrname = 'cyborg'\n",
     "unknown key 'rayborg.keystone.usrname' (did you mean 'rayborg.keystone.username'?)"),
    ("port = 1\n[rayborg]\nhost = '127.0.0.1'\n", "key 'port' is outside the [rayborg] table"),
])
def test_unknown_keys_in_the_file_are_named_with_the_closest_one(clean_env, monkeypatch, capsys, content,
                                                                message):
    clean_env.write_text(content)
    monkeypatch.setenv("RAYBORG_CONFIG", str(clean_env))
    with pytest.raises(SettingsError, match=re.escape(message)):
        load_settings()
    assert cli(["serve"]) == 1
    line = one_error_line(capsys)
    assert line.startswith(f"rayborg serve: config file {clean_env}: ") and message in line


def test_every_key_of_a_full_file_is_known(clean_env, monkeypatch):
    clean_env.write_text("[rayborg]\nport = 1\nenabled_drivers = ['fake']\n"
                         "[rayborg.keystone]\nauth_url = 'http://ks'\n"
                         "[rayborg.driver_options.spdk]\nany_key_the_driver_reads = 1\n")
    monkeypatch.setenv("RAYBORG_CONFIG", str(clean_env))
    s = load_settings()
    assert (s.port, s.keystone.auth_url) == (1, "http://ks")
    assert s.driver_options == {"spdk": {"any_key_the_driver_reads": 1}}


# -- item 13: the environment ---------------------------------------------------------------------

@pytest.mark.parametrize("name, closest", [
    ("RAYBORG_PROT", "RAYBORG_PORT"),
    ("RAYBORG_DATABASE", "RAYBORG_DATABASE_URL"),
    ("RAYBORG_KEYSTONE__AUTHURL", "RAYBORG_KEYSTONE__AUTH_URL"),
    ("RAYBORG_KEYSTONE__AUTH_URL__X", "RAYBORG_KEYSTONE__AUTH_URL"),
    ("RAYBORG_PORT__X", "RAYBORG_PORT"),
    ("rayborg_log_formt", "RAYBORG_LOG_FORMAT"),
])
def test_an_unknown_variable_is_named_with_the_closest_one(clean_env, monkeypatch, capsys, name, closest):
    monkeypatch.setenv(name, "1")
    message = f"unknown environment variable {name} (did you mean {closest!r}?)"
    with pytest.raises(SettingsError, match=re.escape(message)):
        Settings(_env_file=None)
    assert cli(["serve"]) == 1
    assert one_error_line(capsys) == f"rayborg serve: {message}"


def test_the_variables_rayborg_reads_and_sets_are_accepted(clean_env, monkeypatch, served):
    for name, value in {"RAYBORG_CONFIG": str(clean_env), "RAYBORG_LOG_FORMAT": "text",
                        "rayborg_port": "7001", "RAYBORG_KEYSTONE__AUTH_URL": "http://ks/v3",
                        "RAYBORG_DRIVER_OPTIONS__PMEM": "{}", "RAYBORG_DRIVER_OPTIONS__SPDK__SOCKET": "/s",
                        "RAYBORG_SERVICE_CACHE": "/c",
                        "RAYBORG_BENCH_CYBORG_VENV": "/v"}.items():
        monkeypatch.setenv(name, value)
    assert cli(["serve"]) == 0
    assert (served[0].port, served[0].keystone.auth_url) == (7001, "http://ks/v3")


def test_every_rayborg_variable_the_repository_uses_is_accepted():
    """Test-only and bench-only names too: a developer's shell that sets them must still run rayborg."""
    name = re.compile(r"RAYBORG_[A-Z0-9_]*[A-Z0-9]")
    used: set[str] = set(name.findall((REPO / "README.md").read_text()))
    for top in ("rayborg", "actors", "api", "store", "drivers", "tests", "bench", ".ci"):
        for path in (REPO / top).rglob("*"):
            if path.suffix in (".py", ".sh", ".md", ".toml", "") and path.is_file() and path.name != THIS:
                used.update(name.findall(path.read_text("utf-8", "replace")))
    assert {"RAYBORG_SERVICE_CACHE", "RAYBORG_LOG_FORMAT", "RAYBORG_KEYSTONE__AUTH_URL"} <= used
    assert list(unknown_variables(Settings, dict.fromkeys(used, ""))) == []


# -- item 14: noauth beyond loopback --------------------------------------------------------------

@pytest.mark.parametrize("host, why", [
    ("0.0.0.0", "listens on every interface"),
    ("::", "listens on every interface"),
    ("192.168.7.20", "is not a loopback address"),
    ("compute-7.example", "is not a loopback address"),  # resolves to a LAN address (below)
])
def test_serve_refuses_noauth_it_was_not_asked_for_beyond_loopback(clean_env, served, capsys, monkeypatch,
                                                                     host, why):
    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda name, *a, **k: [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.168.7.21", 0))] if name == "compute-7.example"
        else real(name, *a, **k))
    assert cli(["serve", "--host", host]) == 1
    line = one_error_line(capsys)
    assert line.startswith(f"rayborg serve: refusing to start: --host {host} {why}, and auth_strategy noauth")
    assert "--auth-strategy keystone" in line
    assert served == []  # nothing started


def test_loopback_and_keystone_start_without_a_word(clean_env, served, capsys):
    for argv in (["--host", "127.0.0.1"], ["--host", "::1"], ["--host", "localhost"],
                 ["--host", "0.0.0.0", "--auth-strategy", "keystone"]):
        assert cli(["serve", *argv]) == 0
    assert len(served) == 4 and "noauth" not in capsys.readouterr().err
    assert exposure("127.0.0.2") is None and exposure("::ffff:127.0.0.1") is None
    assert exposure("::ffff:10.0.0.1") == "is not a loopback address"


@pytest.mark.parametrize("how", ["flag", "env", "file"])
def test_explicit_noauth_beyond_loopback_starts_and_warns(clean_env, served, capsys, monkeypatch, how):
    argv = ["serve", "--host", "0.0.0.0"]
    if how == "flag":
        argv += ["--auth-strategy", "noauth"]
    elif how == "env":
        monkeypatch.setenv("RAYBORG_AUTH_STRATEGY", "noauth")
    else:
        clean_env.write_text("[rayborg]\nauth_strategy = 'noauth'\n")
        argv[1:1] = ["--config", str(clean_env)]
    assert cli(argv) == 0
    assert served[0].auth_strategy == "noauth" and served[0].host == "0.0.0.0"
    assert "WARNING rayborg.serve: auth_strategy noauth on 0.0.0.0, which listens on every interface" \
        in capsys.readouterr().err


def run_rayborg(*args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rayborg", *args], capture_output=True, text=True,
                          timeout=60, env=env or os.environ, **kwargs)


def test_a_real_serve_refuses_before_anything_starts(tmp_path):
    db = tmp_path / "never.db"
    done = run_rayborg("serve", "--no-actors", "--host", "0.0.0.0", "--database-url", f"sqlite:///{db}",
                       env={k: v for k, v in os.environ.items() if not k.startswith("RAYBORG_")}
                       | {"XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    assert done.returncode == 1
    assert done.stderr.startswith("rayborg serve: refusing to start: --host 0.0.0.0")
    assert done.stderr.count("\n") == 1
    assert not db.exists()  # not even the database was created


def test_a_real_serve_with_explicit_noauth_on_every_interface_warns(tmp_path):
    server = ServeProcess(tmp_path, "--no-actors", "--host", "0.0.0.0", "--auth-strategy", "noauth").start()
    try:
        log = server.log.read_text()
    finally:
        server.stop()
    assert "WARNING rayborg.serve: auth_strategy noauth on 0.0.0.0, which listens on every interface" in log
    assert log.index("auth_strategy noauth on 0.0.0.0") < log.index("rayborg serving the Cyborg v2 API")


# -- item 16: pipes and the last line -------------------------------------------------------------

def piped_to_head(*args: str) -> tuple[int, str, str]:
    """`rayborg ARGS | head -n 1`: rayborg's exit status and stderr, head's output."""
    rayborg = subprocess.Popen([sys.executable, "-m", "rayborg", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    head = subprocess.Popen(["head", "-n", "1"], stdin=rayborg.stdout, stdout=subprocess.PIPE)
    rayborg.stdout.close()  # head holds the only reading end: when it exits, the pipe is broken
    out = head.communicate(timeout=60)[0]
    err = rayborg.stderr.read()
    rayborg.stderr.close()
    return rayborg.wait(60), err.decode(), out.decode()


@pytest.mark.parametrize("args", [["--json"], []], ids=["json", "table"])
def test_output_cut_off_by_head_ends_quietly(args):
    # ~400 KB of JSON / ~150 KB of table: more than a pipe holds, so the reader is gone mid-write
    code, err, out = piped_to_head("discover", "--fake", "fpga:300" if args else "fpga:1000", *args)
    assert (code, err) == (141, "")  # the status of a tool that SIGPIPE ended, and not a word
    assert out.strip()


def test_help_cut_off_by_head_ends_quietly():
    code, err, out = piped_to_head("serve", "--help")
    assert out.startswith("usage: rayborg serve") and err == "" and code in (0, 141)


def test_the_last_line_of_a_failure_is_json_with_log_format_json(tmp_path):
    done = run_rayborg("--log-format", "json", "serve", "--config", str(tmp_path / "missing.toml"))
    assert done.returncode == 1
    last = json.loads(done.stderr.splitlines()[-1])
    assert (last["level"], last["logger"]) == ("ERROR", "rayborg.cli")
    assert last["message"] == f"rayborg serve: config file {tmp_path / 'missing.toml'} does not exist"


def test_an_unexpected_error_with_debug_and_json_is_json_only(monkeypatch, capsys):
    import rayborg.commands.ops as ops
    from rayborg import logs

    def broken(args, admin=False):
        raise RuntimeError("kaput\nsecond line")

    monkeypatch.setattr(ops, "_connect", broken)
    try:
        assert cli(["status", "--debug", "--log-format", "json"]) == 1
    finally:
        logs.setup("text")  # leave no json handler behind
    lines = capsys.readouterr().err.splitlines()
    records = [json.loads(line) for line in lines]  # every line: no bare traceback
    assert records[-1]["message"] == "rayborg status: RuntimeError: kaput"
    assert "RuntimeError: kaput" in records[-1]["exception"]


@pytest.mark.parametrize("argv", [["--log-format", "json", "serve", "--port", "abc"],
                                  ["serve", "--port", "abc", "--log-format=json"]])
def test_a_usage_error_with_log_format_json_is_one_json_line(capsys, argv):
    with pytest.raises(SystemExit) as exited:
        cli(argv)
    assert exited.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert json.loads(line)["message"] == "rayborg serve: error: argument --port: invalid int value: 'abc'"
    with pytest.raises(SystemExit):
        cli(["serve", "--port", "abc"])  # text: argparse's usage and error, as ever
    assert capsys.readouterr().err.startswith("usage: rayborg serve")

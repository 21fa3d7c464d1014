"""`rayborg serve` as a real process (API and store only, no Ray): migrates, serves, logs where,
stops cleanly on SIGTERM and SIGINT, with one or several front-door processes; `--help` is complete."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from serve_process import ServeProcess

from rayborg.cli import build_parser
from rayborg.store.migrate import current, head


def get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status


def stop_within(server: ServeProcess, sig: int, seconds: float) -> int:
    start = time.monotonic()
    server.proc.send_signal(sig)
    code = server.proc.wait(seconds)
    server.stop()  # closes the log file
    assert time.monotonic() - start < seconds
    return code


def nobody_listens(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def listening_processes(pid: int, port: int) -> int:
    """How many of `pid` and its children hold a socket listening on `port` (Linux /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # 0A: LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    count = 0
    for proc in [str(pid), *children]:
        links = {os.readlink(fd) for fd in Path(f"/proc/{proc}/fd").iterdir() if fd.is_symlink()}
        count += bool(links & inodes)
    return count


def wait_for(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_migrates_serves_and_stops_on_a_signal(tmp_path, sig):
    server = ServeProcess(tmp_path, "--no-actors").start()
    try:
        assert get(f"{server.url}/v2") == 200
        assert current(server.database_url) == head()
    finally:
        assert stop_within(server, sig, 10) == 0
    log = server.log.read_text()
    assert f"rayborg serving the Cyborg v2 API on {server.url} (database {server.database_url}," in log
    assert "rayborg stopped" in log and "Traceback" not in log
    assert nobody_listens(server.port)


@pytest.mark.postgres
def test_serve_on_postgresql_hides_the_password(tmp_path, postgres_server):
    server = ServeProcess(tmp_path, "--no-actors")
    url = postgres_server.create_database().replace("postgresql+psycopg://rayborg@",
                                                    "postgresql://rayborg:hunter2@", 1)
    server.args[server.args.index("--database-url") + 1] = url
    server.start()
    try:
        assert get(f"{server.url}/v2/devices") == 200
    finally:
        assert stop_within(server, signal.SIGTERM, 10) == 0
    log = server.log.read_text()
    assert "hunter2" not in log and "(database postgresql://rayborg:***@" in log


def test_several_front_door_processes_share_the_port(tmp_path):
    server = ServeProcess(tmp_path, "--no-actors", "--workers", "3").start()
    try:
        assert wait_for(lambda: listening_processes(server.proc.pid, server.port) == 3, 30)
        assert all(get(f"{server.url}/v2") == 200 for _ in range(20))
        assert "3 front-door processes" in server.log.read_text()
    finally:
        assert stop_within(server, signal.SIGTERM, 15) == 0
    assert nobody_listens(server.port)  # the extra processes went too


def test_serve_help_explains_every_option():
    out = subprocess.run([sys.executable, "-m", "rayborg", "serve", "--help"], capture_output=True,
                         text=True, check=True).stdout
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]
    for action in serve._actions:
        assert action.help, f"{action.option_strings} has no help"
        assert action.option_strings[-1] in out
    for flag in ("--host", "--port", "--database-url", "--public-url", "--auth-strategy", "--policy-file",
                 "--workers"):
        assert flag in out
    assert "RAYBORG_" in out and "--config" in out  # where else the options can be set


DEFAULT_PORT = 6666  # Cyborg's


def test_bare_serve_uses_the_embedded_defaults(tmp_path):
    """`rayborg serve` with no database or address option (only --no-actors: no Ray here) and no
    RAYBORG_* settings: SQLite under the user's data directory (created and migrated), 127.0.0.1 and
    port 6666. When 6666 is already taken on this machine, RAYBORG_PORT names a free port instead
    (the command line stays bare); the default itself is then only seen in the settings tests."""
    home, data = tmp_path / "home", tmp_path / "data"
    env = {"HOME": str(home), "XDG_DATA_HOME": str(data), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    server = ServeProcess(tmp_path, "--no-actors")
    server.args = ["serve", "--no-actors"]
    server.env = {k: v for k, v in server.env.items() if not k.startswith("RAYBORG_")} | env
    if not nobody_listens(DEFAULT_PORT):
        server.env["RAYBORG_PORT"] = str(server.port)
    else:
        server.port = DEFAULT_PORT
    server.url = f"http://127.0.0.1:{server.port}"
    db = data / "rayborg" / "rayborg.db"
    server.start()
    try:
        assert get(f"{server.url}/v2") == 200
        assert db.is_file() and current(f"sqlite:///{db}") == head()
    finally:
        assert stop_within(server, signal.SIGTERM, 10) == 0
    log = server.log.read_text()
    assert f"rayborg serving the Cyborg v2 API on {server.url} (database sqlite:///{db}," in log

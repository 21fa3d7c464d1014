"""One daemon per port and per database (issue 14, items 10-12): a second `rayborg serve` on a busy
port or on a database in use exits at once naming the first; the lease of a daemon killed -9 is
taken over; the CLI and the Python API talk to the daemon of their own database, never to whatever
Ray cluster runs on this machine."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
from serve_process import ServeProcess
from sqlalchemy import update

from rayborg.cli import CLIError, main
from rayborg.daemon import _listen_sockets
from rayborg.store import daemon_lease
from rayborg.store.daemon_lease import LEASE_SECONDS, DaemonRunning
from rayborg.store.tables import DaemonLease


def _serve(tmp_path, *args: str) -> ServeProcess:
    tmp_path.mkdir(parents=True, exist_ok=True)
    server = ServeProcess(tmp_path, *args)
    (tmp_path / "none.toml").touch()  # the settings file ServeProcess names: empty
    return server


def _run_serve(server: ServeProcess, timeout: float = 30) -> tuple[int, str, float]:
    """Run a serve that is expected to exit: its exit code, output and seconds taken."""
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "rayborg", *server.args], env=server.env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:  # it did not exit: end it and whatever it started
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    return proc.returncode, out, time.monotonic() - start


def _serving(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return False
    return True


# -- item 10: the port ----------------------------------------------------------------------------
def test_the_sockets_of_one_serve_share_the_port_and_exclude_any_other(tmp_path):
    first = _listen_sockets("127.0.0.1", 0, 1)[0]
    port = first.getsockname()[1]
    with pytest.raises(CLIError, match=f"cannot listen on 127.0.0.1:{port}: Address already in use"):
        _listen_sockets("127.0.0.1", port, 2)
    first.close()
    group = _listen_sockets("127.0.0.1", port, 3)  # a serve with --workers 3
    try:
        assert {s.getsockname()[1] for s in group} == {port}
        for count in (1, 3):  # another serve, with or without workers, finds the port taken
            with pytest.raises(CLIError, match=f"127.0.0.1:{port}"):
                _listen_sockets("127.0.0.1", port, count)
    finally:
        for s in group:
            s.close()


# -- item 11: the database lease ------------------------------------------------------------------
def test_a_second_daemon_on_a_database_is_refused_and_named(store, capsys):
    lease = daemon_lease.acquire(store, api_host="127.0.0.1", api_port=6001, database_url=store.url)
    try:
        with pytest.raises(DaemonRunning) as refused:
            daemon_lease.acquire(store, api_host="127.0.0.1", api_port=6002, database_url=store.url)
        text = str(refused.value)
        assert f"pid {os.getpid()} on host {socket.gethostname()}, port 6001" in text
        assert daemon_lease.current(store) == lease.record
        # `rayborg db` and direct store use go on while a daemon holds the database
        assert main(["db", "current", "--database-url", store.url]) == 0
        assert "at revision" in capsys.readouterr().out
        assert daemon_lease.find(store.url).api_port == 6001
    finally:
        lease.release()
    assert daemon_lease.current(store) is None
    daemon_lease.acquire(store, api_host="127.0.0.1", api_port=6002, database_url=store.url).release()


HOLDER = textwrap.dedent("""
    import sys, time
    from rayborg.store.engine import Store
    from rayborg.store import daemon_lease
    store = Store(sys.argv[1])
    daemon_lease.acquire(store, api_host="127.0.0.1", api_port=6003, database_url=sys.argv[1])
    print("held", flush=True)
    time.sleep(300)
""")


def test_the_lease_of_a_daemon_killed_9_is_taken_over_at_once(store):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, store.url], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DaemonRunning, match=f"pid {holder.pid} on host .*, port 6003"):
            daemon_lease.acquire(store, api_host="127.0.0.1", api_port=6004, database_url=store.url)
    finally:
        holder.kill()
        holder.wait()
    assert daemon_lease.current(store) is None  # its process is gone: no daemon
    lease = daemon_lease.acquire(store, api_host="127.0.0.1", api_port=6004, database_url=store.url)
    assert daemon_lease.current(store).pid == os.getpid()
    lease.release()


def _as_if_elsewhere(store, heartbeat_at: float) -> None:
    """Make the lease row look like one of a daemon on another machine, last seen at `heartbeat_at`."""
    store.transact(lambda s: s.execute(update(DaemonLease).values(machine="another-machine",
                                                                  heartbeat_at=heartbeat_at)))


def test_a_daemon_on_another_machine_keeps_the_lease_while_its_heartbeat_is_fresh(store):
    first = daemon_lease.acquire(store, api_host="10.0.0.1", api_port=6005, database_url=store.url)
    lost = []
    _as_if_elsewhere(store, time.time() - LEASE_SECONDS / 2)
    with pytest.raises(DaemonRunning, match="port 6005"):
        daemon_lease.acquire(store, api_host="127.0.0.1", api_port=6006, database_url=store.url)
    assert first.heartbeat()  # still its own
    _as_if_elsewhere(store, time.time() - LEASE_SECONDS - 1)  # silent for longer than a lease: gone
    second = daemon_lease.acquire(store, api_host="127.0.0.1", api_port=6006, database_url=store.url)
    assert not first.heartbeat()
    first.keep_alive(lost.append, interval=0.01)  # the old holder learns that it lost the lease
    deadline = time.monotonic() + 10
    while not lost and time.monotonic() < deadline:
        time.sleep(0.01)
    assert lost == [second.record]
    first.release()  # lets go of nothing: the lease is the second's
    assert daemon_lease.current(store) == second.record
    second.release()


# -- items 10 and 11 as a user meets them: real serve processes (without Ray) ----------------------
def test_second_serve_on_a_busy_port_or_database_exits_at_once_naming_the_first(tmp_path):
    first = _serve(tmp_path / "a", "--no-actors", "--workers", "2").start()
    try:
        # Another database, same port: refused before Ray would start (this one would start Ray)
        other = _serve(tmp_path / "b", "--fake-devices", "fpga:1")
        other.args[other.args.index("--port") + 1] = str(first.port)
        code, out, took = _run_serve(other)
        assert code == 1 and took < 15, out
        assert out.strip() == (f"rayborg serve: cannot listen on 127.0.0.1:{first.port}: Address already in "
                               f"use (another rayborg serve or another program has it)")
        # Same database, another port: refused, naming the daemon there
        same = _serve(tmp_path / "c", "--no-actors")
        same.args[same.args.index("--database-url") + 1] = first.database_url
        code, out, took = _run_serve(same)
        assert code == 1 and took < 15, out
        assert (f"rayborg serve: database {first.database_url} is in use by another rayborg daemon: pid "
                f"{first.proc.pid} on host {socket.gethostname()}, port {first.port}") in out
        assert out.count("\n") == 1 and _serving(first.port)  # one line; the first one goes on, alone
        # killed -9 (its front-door worker is left behind and must let go of the port): a new daemon
        # takes over both at once
        os.kill(first.proc.pid, signal.SIGKILL)
        first.proc.wait()
        again = _serve(tmp_path / "d", "--no-actors")
        again.port, again.url = first.port, first.url
        again.args = ["serve", "--no-actors", "--port", str(first.port), "--database-url", first.database_url]
        deadline = time.monotonic() + 15
        while _serving(first.port) and time.monotonic() < deadline:  # the orphaned worker going
            time.sleep(0.1)
        again.start(timeout=30)
        assert daemon_lease.find(first.database_url).pid == again.proc.pid
        assert again.stop() == 0
    finally:
        first.stop()
        try:  # whatever of the first daemon's process group is left
            os.killpg(first.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# -- item 12: the CLI and the Python API find their own daemon ------------------------------------
def test_which_database_a_daemon_uses_is_compared_without_passwords_or_spelling(tmp_path, monkeypatch):
    """The daemon's actors report their database with the password hidden (`***`)."""
    same = daemon_lease.same_database
    assert same("postgresql://rayborg:secret@db:5432/rayborg",
                "postgresql+psycopg://rayborg:***@db:5432/rayborg")
    assert same("postgresql://rayborg@db/rayborg", "postgresql+psycopg://rayborg:***@db/rayborg")
    assert not same("postgresql://rayborg@db/rayborg", "postgresql://rayborg@db/other")
    assert not same("postgresql://rayborg@db/rayborg", "postgresql://rayborg@db2/rayborg")
    monkeypatch.chdir(tmp_path)
    assert same("sqlite:///rayborg.db", f"sqlite:///{tmp_path / 'rayborg.db'}")
    assert not same(f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}")


def test_without_a_daemon_of_its_own_the_cli_says_so(tmp_path, capsys):
    db = tmp_path / "nobody.db"
    for command in ("status", "devices", "arqs"):
        assert main([command, "--database-url", f"sqlite:///{db}"]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"rayborg {command}: no rayborg daemon runs for database sqlite:///{db}")
    assert not db.exists()  # looking for one created nothing


def test_without_a_daemon_of_its_own_connect_raises(store):
    import rayborg

    with pytest.raises(rayborg.RayborgError, match="no rayborg daemon runs for database"):
        rayborg.connect(database_url=store.url)
    lease = daemon_lease.acquire(store, api_host="127.0.0.1", api_port=6007, database_url=store.url)
    try:  # a daemon with --no-actors has no Ray cluster to act through
        with pytest.raises(rayborg.RayborgError, match="runs without actors"):
            rayborg.connect(database_url=store.url)
    finally:
        lease.release()

"""`rayborg serve --join` (rayborg/join.py), without Ray: when it takes the database's lease and whose
actors it uses. The front doors on two hosts of a real cluster: tests/cluster/test_netns_front_doors.py."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest
from test_one_daemon import HOLDER

from rayborg import join
from rayborg.cli import main
from rayborg.settings import Settings
from rayborg.store import daemon_lease

GCS = "10.0.0.10:6379"


@pytest.fixture
def joined(store, monkeypatch):
    """A joined front door whose Ray is `GCS` (no Ray started) and whose runtimes are plain records."""
    monkeypatch.setattr(join, "init_ray", lambda settings: (GCS, None))
    monkeypatch.setattr(join, "start_supervisor", lambda settings: "supervisor")
    monkeypatch.setattr(join, "use_actors", lambda settings, store, gcs, dashboard, supervisor=None:
                        ("actors", gcs, supervisor))
    monkeypatch.setattr(join, "WATCH_SECONDS", 0.01)
    settings = Settings(database_url=store.url, ray_address=GCS, join=True, port=6010, _env_file=None)
    door = join.JoinedFrontDoor(settings, store, on_lost=lambda holder: None)
    yield door
    door.release()


def _hold(store, **values) -> daemon_lease.Lease:
    lease = daemon_lease.acquire(store, api_host="127.0.0.1", api_port=6011, database_url=store.url)
    if values:
        lease.update(**values)
    return lease


def test_join_needs_the_holders_ray_cluster(tmp_path, capsys):
    for extra in ([], ["--address", GCS, "--no-actors"]):
        assert main(["serve", "--join", "--database-url", f"sqlite:///{tmp_path / 'j.db'}", *extra]) == 1
        assert "--join serves with the actors of the daemon holding the database's lease" in capsys.readouterr().err
    assert not (tmp_path / "j.db").exists()  # refused before anything started


def test_a_joined_front_door_uses_the_holders_actors_and_takes_no_lease(joined, store):
    holder = _hold(store, ray_address=GCS)
    try:
        assert joined.start() == ("actors", GCS, None)
        assert not joined.take_if_free(GCS) and joined.lease is None
        assert daemon_lease.current(store) == holder.record
    finally:
        holder.release()
    # The holder gone: the joined front door takes the lease, with its own address and, in the same
    # write, the Ray cluster it joined (a reader never sees the lease without it).
    assert joined.take_if_free(GCS, "http://dash")
    record = daemon_lease.current(store)
    assert (record.api_port, record.ray_address, record.dashboard_url) == (6010, GCS, "http://dash")
    assert joined.lease is not None


def test_a_joined_front_door_takes_the_lease_of_a_holder_killed_9(joined, store):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, store.url], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        assert not joined.take_if_free(GCS)
    finally:
        proc.kill()
        proc.wait()
    assert joined.take_if_free(GCS)
    assert (daemon_lease.current(store).api_port, daemon_lease.current(store).ray_address) == (6010, GCS)


def test_with_no_holder_a_joined_front_door_takes_the_lease_and_starts_the_actors(joined, store):
    assert joined.start() == ("actors", GCS, "supervisor")
    record = daemon_lease.current(store)
    assert (record.api_port, record.ray_address) == (6010, GCS)


@pytest.mark.parametrize("values, error", [
    ({"ray_address": None}, "runs without actors"),
    ({"ray_address": "10.9.9.9:6379"}, "uses the Ray cluster at 10.9.9.9:6379, this front door joined " + GCS),
])
def test_a_joined_front_door_refuses_a_holder_it_cannot_join(joined, store, values, error):
    holder = _hold(store, **values)
    try:
        with pytest.raises(RuntimeError, match=error):
            joined.start()
    finally:
        holder.release()


def test_a_joined_front_door_waits_while_the_holders_actors_start(joined, store):
    holder = _hold(store, ray_address=daemon_lease.RAY_STARTING)
    up = threading.Event()

    def actors_up() -> None:
        holder.update(ray_address=GCS)
        up.set()

    timer = threading.Timer(0.5, actors_up)  # the holder's actors come up while the front door waits
    timer.start()
    try:
        assert joined.start() == ("actors", GCS, None)
        assert up.is_set() and joined.lease is None
    finally:
        timer.cancel()
        holder.release()


def test_a_plain_second_serve_is_refused_and_told_of_join(store, capsys):
    from netutil import free_port

    holder = _hold(store, ray_address=GCS)
    try:
        assert main(["serve", "--database-url", store.url, "--port", str(free_port())]) == 1
    finally:
        holder.release()
    err = capsys.readouterr().err
    assert "is in use by another rayborg daemon" in err and err.rstrip().endswith("(or add --join to serve beside it)")

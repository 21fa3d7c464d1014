"""store/daemon_lease.py on both databases: one lease per database, refused to a second daemon
while its holder lives, taken over from a dead holder (same machine: its process is gone; another
machine: its heartbeat is stale), a holder told when it lost it, given back on release; `find`
never creates a database; `same_database` sees one database through spellings."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import update

from rayborg.store import daemon_lease
from rayborg.store.daemon_lease import DaemonRunning
from rayborg.store.tables import DaemonLease


def _acquire(store, url, port=6666):
    return daemon_lease.acquire(store, api_host="127.0.0.1", api_port=port, database_url=url)


def _set(store, **values):
    store.transact(lambda s: s.execute(update(DaemonLease).values(**values)))


def test_one_holder_and_what_it_records(store, database_url):
    assert daemon_lease.current(store) is None and daemon_lease.find(database_url) is None
    lease = _acquire(store, database_url)
    with pytest.raises(DaemonRunning, match="in use by another rayborg daemon: pid .* port 6666") as err:
        _acquire(store, database_url, port=7777)
    assert err.value.record.owner == lease.record.owner
    lease.update(ray_address="10.0.0.1:6379")
    found = daemon_lease.find(database_url)
    assert found.ray_address == "10.0.0.1:6379" and found.api_url == "http://127.0.0.1:6666"
    assert "password" not in found.as_dict() and "owner" not in found.as_dict()
    assert lease.heartbeat()
    lease.release()
    assert daemon_lease.current(store) is None
    _acquire(store, database_url, port=7777).release()  # free again


def test_a_dead_holder_is_taken_over_and_told(store, database_url):
    old = _acquire(store, database_url)
    _set(store, process_start="not-this-process")  # its pid now belongs to another process
    lost = []
    done = threading.Event()
    old.keep_alive(lambda holder: (lost.append(holder), done.set()), interval=0.05)
    new = _acquire(store, database_url, port=7777)
    assert done.wait(5) and lost[0].owner == new.record.owner
    assert not old.heartbeat() and new.heartbeat()
    old.release()  # gives back nothing of the new holder's
    assert daemon_lease.current(store).owner == new.record.owner
    new.release()


def test_another_machines_holder_lives_while_its_heartbeat_is_fresh(store, database_url):
    lease = _acquire(store, database_url)
    _set(store, machine="another-machine")
    with pytest.raises(DaemonRunning):
        _acquire(store, database_url, port=7777)
    _set(store, heartbeat_at=time.time() - daemon_lease.LEASE_SECONDS - 1)
    assert daemon_lease.current(store) is None
    _acquire(store, database_url, port=7777).release()
    lease.release()


def test_find_creates_nothing(tmp_path):
    missing = tmp_path / "none.db"
    assert daemon_lease.find(f"sqlite:///{missing}") is None and not missing.exists()


def test_same_database_through_spellings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert daemon_lease.same_database("sqlite:///x.db", f"sqlite:///{tmp_path / 'x.db'}")
    assert not daemon_lease.same_database("sqlite:///x.db", "sqlite:///y.db")
    assert daemon_lease.same_database("postgresql://u:secret@h/db", "postgresql+psycopg://u@h/db")
    assert not daemon_lease.same_database("postgresql://u@h/db", "postgresql://u@h/other")

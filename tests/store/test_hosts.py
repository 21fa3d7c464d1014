"""store/hosts.py on both databases: a host row made once, a lost host's deployables marked for a
push (once: losing it again marks nothing), `hostnames_up`, and the compute node with its error."""

from __future__ import annotations

from factories import add_device
from sqlmodel import select

from rayborg.store import hosts, placement_marks
from rayborg.store.tables import Deployable, Host, HostState


def _host(session, name):
    return session.exec(select(Host).where(Host.hostname == name)).one()


def _all_pushed(session):
    for dep in session.exec(select(Deployable)):
        dep.placement_dirty = False


def test_upsert_makes_one_row_per_host(store):
    def upsert(session):
        host = hosts.upsert_host(session, "h1")
        session.flush()
        return host.id

    assert store.transact(upsert) == store.transact(upsert)
    assert store.query(lambda s: len(s.exec(select(Host)).all())) == 1


def test_a_lost_host_marks_its_deployables_dirty_once_and_leaves_hostnames_up(store):
    tree = add_device(store, hostname="h1", deployables=2)
    add_device(store, hostname="h2", bus=0x5f)
    store.transact(hosts.upsert_host, "h2")
    store.transact(_all_pushed)
    store.transact(hosts.mark_lost, "h1")  # no row yet: made, as lost
    assert store.query(lambda s: _host(s, "h1").state) == HostState.LOST.value
    assert sorted(store.query(placement_marks.dirty)) == sorted((i, "h1") for i in tree.deployable_ids)
    assert store.query(hosts.hostnames_up) == ["h2"]

    store.transact(_all_pushed)
    store.transact(hosts.mark_lost, "h1")  # already lost: nothing changes in Placement
    assert store.query(placement_marks.dirty) == []


def test_record_compute_node_sets_or_explains(store):
    store.transact(hosts.upsert_host, "h1")
    store.transact(hosts.record_compute_node, "h1", None)
    assert store.query(lambda s: (_host(s, "h1").compute_rp_uuid, _host(s, "h1").sync_error)) == (
        None, "no compute node named h1 in Placement")
    store.transact(hosts.record_compute_node, "h1", "11111111-2222-4333-8444-555555555555")
    assert store.query(lambda s: (_host(s, "h1").compute_rp_uuid, _host(s, "h1").sync_error)) == (
        "11111111-2222-4333-8444-555555555555", None)
    store.transact(hosts.record_compute_node, "unknown", "x")  # no row: nothing made
    assert store.query(lambda s: s.exec(select(Host).where(Host.hostname == "unknown")).first()) is None

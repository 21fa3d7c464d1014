"""store/placement_marks.py, the Placement push's outbox, on both databases: which deployables wait
for a push (all or one host's), what to push against what was pushed (nothing kept from under another
compute node), a push recorded clean unless the deployable changed again, enable/disable marks, and
tombstones buried once their RP is gone."""

from __future__ import annotations

from factories import add_device
from sqlmodel import select

from rayborg.store import placement_marks as marks
from rayborg.store.tables import Device, DeviceStatus, PlacementTombstone

PARENT = "99999999-2222-4333-8444-555555555555"
OTHER_PARENT = "88888888-2222-4333-8444-555555555555"


def test_dirty_lists_new_deployables_by_host(store):
    a = add_device(store, hostname="h1", deployables=2)
    b = add_device(store, hostname="h2", bus=0x5f)
    assert sorted(store.query(marks.dirty)) == sorted([(i, "h1") for i in a.deployable_ids]
                                                     + [(b.deployable_ids[0], "h2")])
    assert store.query(marks.dirty, "h2") == [(b.deployable_ids[0], "h2")]


def test_a_push_recorded_is_clean_until_the_deployable_changes(store):
    tree = add_device(store, hostname="h1", deployables=2, bus=0x10)
    dep, other = tree.deployable_ids
    desired, last = store.query(marks.to_push, dep, PARENT)
    assert last is None and desired.total == 2 and desired.reserved == 0
    store.transact(marks.pushed, dep, desired)
    assert store.query(marks.dirty) == [(other, "h1")]
    assert store.query(marks.to_push, dep, PARENT) == (desired, desired)
    # The compute node was re-created: what was pushed under the old one does not count.
    assert store.query(marks.to_push, dep, OTHER_PARENT)[1] is None

    def disable(session):
        session.exec(select(Device)).one().status = DeviceStatus.MAINTAINING.value

    store.transact(disable)
    store.transact(marks.pushed, dep, desired)  # an older state lands after the change: stays dirty
    assert (dep, "h1") in store.query(marks.dirty)
    store.transact(marks.pushed, dep, store.query(marks.to_push, dep, PARENT)[0])
    assert (dep, "h1") not in store.query(marks.dirty)
    assert store.query(marks.to_push, 10**6, PARENT) is None  # gone
    store.transact(marks.pushed, 10**6, desired)  # a no-op, no error


def test_device_and_host_marks(store):
    a = add_device(store, hostname="h1", deployables=2, bus=0x10)
    b = add_device(store, hostname="h2", bus=0x11)
    for dep in a.deployable_ids + b.deployable_ids:
        store.transact(marks.pushed, dep, store.query(marks.to_push, dep, PARENT)[0])
    assert store.query(marks.dirty) == []
    store.transact(marks.mark_device_dirty, b.device_id)
    assert store.query(marks.dirty) == [(b.deployable_ids[0], "h2")]
    store.transact(marks.mark_host_dirty, "h1")
    assert sorted(store.query(marks.dirty)) == sorted([(i, "h1") for i in a.deployable_ids]
                                                     + [(b.deployable_ids[0], "h2")])


def test_tombstones_by_host_and_buried(store):
    def bury_later(session):
        session.add(PlacementTombstone(rp_uuid="11111111-2222-4333-8444-000000000001", hostname="h1"))
        session.add(PlacementTombstone(rp_uuid="11111111-2222-4333-8444-000000000002", hostname="h2"))

    store.transact(bury_later)
    assert sorted(rp for _, rp in store.query(marks.tombstones)) == [
        "11111111-2222-4333-8444-000000000001", "11111111-2222-4333-8444-000000000002"]
    [(tomb, rp)] = store.query(marks.tombstones, "h1")
    assert rp == "11111111-2222-4333-8444-000000000001"
    store.transact(marks.buried, tomb)
    store.transact(marks.buried, tomb)  # twice: nothing left to drop, no error
    assert [rp for _, rp in store.query(marks.tombstones)] == ["11111111-2222-4333-8444-000000000002"]

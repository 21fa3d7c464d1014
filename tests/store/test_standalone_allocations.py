"""The outbox of standalone binds' Placement allocations, on both databases: every transition of a
standalone ARQ marks its consumer in the same transaction, `pending` says what rayborg's part should
be, and a push recorded against an old version leaves the consumer dirty."""

from __future__ import annotations

import uuid

from factories import add_device, add_profile

from rayborg.store import arq_state, bind_plan
from rayborg.store import standalone_allocations as outbox
from rayborg.store.arq_state import BindTarget


def _bound(store, instance: str, host: str | None = None, count: int = 1) -> list[str]:
    arqs = [a.uuid for _ in range(count) for a in store.transact(arq_state.create_arqs, "dp", "p1")]
    store.transact(arq_state.start_bind, {a: BindTarget(host, None, instance, "p1") for a in arqs})
    for a in arqs:
        assert store.transact(arq_state.finish_bind, a) == "Bound"
    return arqs


def _push(store, consumer: str) -> outbox.Pending:
    pending = store.query(outbox.pending, consumer)
    store.transact(outbox.record_pushed, consumer, pending.version, pending.desired)
    return pending


def test_standalone_bind_unbind_and_delete_mark_their_consumer(store):
    add_profile(store, "dp", [{"resources:FPGA": "1"}])
    tree = add_device(store, "host1", handles_per_deployable=2)
    instance = str(uuid.uuid4())
    arqs = _bound(store, instance, "host1", count=2)
    assert store.query(outbox.dirty) == [instance]
    pending = _push(store, instance)
    assert pending.desired == {tree.rp_uuids[0]: {"FPGA": 2}} and pending.project_id == "p1"
    assert store.query(outbox.dirty) == []

    store.transact(bind_plan.unbind_releasing, [arqs[0]], None)
    assert store.query(outbox.dirty) == [instance]
    pending = store.query(outbox.pending, instance)
    assert (pending.pushed, pending.desired) == ({tree.rp_uuids[0]: {"FPGA": 2}}, {tree.rp_uuids[0]: {"FPGA": 1}})
    _push(store, instance)

    store.transact(arq_state.delete_arqs, [arqs[1]])
    assert store.query(outbox.pending, instance).desired == {}
    _push(store, instance)
    assert store.query(outbox.dirty) == []
    assert store.query(outbox.pending, instance).version == 0  # clean and empty: the row is gone


def test_a_push_of_an_older_version_stays_dirty(store):
    add_profile(store, "dp", [{"resources:FPGA": "1"}])
    add_device(store, "host1", handles_per_deployable=2)
    instance = str(uuid.uuid4())
    (arq,) = _bound(store, instance)
    stale = store.query(outbox.pending, instance)
    store.transact(arq_state.fail_bind, arq, "programming failed")  # changes after the read
    assert not store.transact(outbox.record_pushed, instance, stale.version, stale.desired)
    assert store.query(outbox.dirty) == [instance]
    assert store.query(outbox.pending, instance).pushed == stale.desired  # what Placement holds now
    assert store.query(outbox.pending, instance).desired == {}


def test_nova_binds_mark_nothing(store):
    add_profile(store, "dp", [{"resources:FPGA": "1"}])
    tree = add_device(store, "host1")
    (arq,) = [a.uuid for a in store.transact(arq_state.create_arqs, "dp", "p1")]
    instance = str(uuid.uuid4())
    store.transact(arq_state.start_bind, {arq: BindTarget("host1", tree.rp_uuids[0], instance, "p1")})
    store.transact(arq_state.finish_bind, arq)
    store.transact(bind_plan.unbind_releasing, [arq], None)
    assert store.query(outbox.dirty) == []

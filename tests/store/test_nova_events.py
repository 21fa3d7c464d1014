"""The Nova-event outbox: what is owed per instance once none of its ARQs is still binding, its
size, and clearing what Nova took."""

from __future__ import annotations

import uuid

from factories import add_device, add_profile

from rayborg.store import arq_state, nova_events
from rayborg.store.arq_state import BindTarget


def test_events_are_owed_per_resolved_instance(store):
    add_profile(store, "dp", [{"resources:FPGA": "2"}])
    tree = add_device(store, handles_per_deployable=2)
    a, b = [r.uuid for r in store.transact(arq_state.create_arqs, "dp", "p1")]
    instance = str(uuid.uuid4())
    store.transact(arq_state.start_bind, {u: BindTarget("host1", tree.rp_uuids[0], instance) for u in (a, b)})
    store.transact(arq_state.finish_bind, a)
    assert store.query(nova_events.pending) == {}  # b still binds: one call per instance, later
    assert store.query(nova_events.pending_count) == 1
    store.transact(arq_state.fail_bind, b, "programming failed")
    assert store.query(nova_events.pending) == {instance: sorted([(a, "Bound"), (b, "BindFailed")])}
    store.transact(nova_events.clear, [a, b])
    assert store.query(nova_events.pending) == {} and store.query(nova_events.pending_count) == 0


def test_a_claims_consumer_is_never_owed_a_nova_event(store):
    """A Python API claim binds to a consumer of its own, not a Nova server: nothing is sent for it,
    even between the bind's end and the claim clearing the flag."""
    from rayborg.store import claims

    add_profile(store, "dp", [{"resources:FPGA": "1"}])
    tree = add_device(store)
    (a,) = [r.uuid for r in store.transact(arq_state.create_arqs, "dp", "p1")]
    consumer = claims.consumer_uuid(None)
    store.transact(arq_state.start_bind, {a: BindTarget("host1", tree.rp_uuids[0], consumer)})
    store.transact(arq_state.finish_bind, a)
    assert store.query(nova_events.pending) == {}

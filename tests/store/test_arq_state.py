"""The ARQ state machine on both databases: counts, transitions as compare-and-set, handle claims
(never one handle twice, even with 50 binders racing for 5 handles), release on unbind/delete."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from factories import add_device, add_profile
from rayborg.store import arq_state, bind_plan
from rayborg.store.arq_state import BindTarget
from rayborg.store.tables import ARQState, AttachHandle, Device, ExtARQ


def arqs_by_uuid(store) -> dict[str, ExtARQ]:
    return {a.uuid: a for a in store.query(lambda s: list(s.scalars(select(ExtARQ))))}


def handles_in_use(store) -> set[int]:
    in_use = select(AttachHandle.id).where(AttachHandle.in_use.is_(True))
    return set(store.query(lambda s: list(s.scalars(in_use))))


def new_arqs(store, count: int = 1, name: str = "dp") -> list[str]:
    add_profile(store, name, [{"resources:FPGA": str(count)}])
    return [a.uuid for a in store.transact(arq_state.create_arqs, name, "proj")]


def target(tree, instance: str | None = None, hostname: str = "host1") -> BindTarget:
    return BindTarget(hostname=hostname, device_rp_uuid=tree.rp_uuids[0],
                      instance_uuid=instance or str(uuid.uuid4()), project_id="proj")


def unbind(session, arq_uuids: list[str]) -> dict[str, ARQState]:
    return arq_state.unbind_locked(session, arq_state.lock_all(session, arq_uuids, None))


def bind(store, arq_uuid: str, tgt: BindTarget) -> ARQState:
    store.transact(arq_state.start_bind, {arq_uuid: tgt})
    return store.transact(arq_state.finish_bind, arq_uuid)


@pytest.mark.parametrize("groups,expected", [
    ([{"resources:FPGA": "2"}, {"resources:GPU": "1", "resources:CUSTOM_X": "2"}], [0, 0, 1, 1, 1]),
    ([{"resources:FPGA": "1", "trait:CUSTOM_FPGA_XILINX": "required"}], [0, 0]),
    ([{"resources:FPGA": "1", "trait:CUSTOM_FPGA_XILINX": "forbidden"}], [0]),
    ([{"trait:CUSTOM_ONLY": "required"}, {"resources:VGPU": "1"}], [1]),
])
def test_create_counts_arqs_per_group(store, groups, expected):
    add_profile(store, "dp", groups)
    arqs = store.transact(arq_state.create_arqs, "dp", "proj")
    assert [a.device_profile_group_id for a in arqs] == expected
    assert all(a.state == ARQState.INITIAL and a.project_id == "proj" for a in arqs)


def test_create_unknown_profile(store):
    with pytest.raises(arq_state.NotFoundError):
        store.transact(arq_state.create_arqs, "nope", "proj")


def test_bind_claims_a_handle_and_unbind_releases_it(store):
    tree = add_device(store, handles_per_deployable=1)
    (arq,) = new_arqs(store)
    tgt = target(tree)
    store.transact(arq_state.start_bind, {arq: tgt})
    row = arqs_by_uuid(store)[arq]
    assert (row.state, row.hostname, row.device_rp_uuid, row.instance_uuid) == (
        ARQState.BIND_STARTED, "host1", tree.rp_uuids[0], tgt.instance_uuid)
    assert store.transact(arq_state.finish_bind, arq) == ARQState.BOUND
    row = arqs_by_uuid(store)[arq]
    assert row.attach_handle_id == tree.handle_ids[0] and row.deployable_id == tree.deployable_ids[0]
    assert row.nova_event_pending is True and handles_in_use(store) == {tree.handle_ids[0]}

    assert store.transact(unbind, [arq]) == {arq: ARQState.UNBOUND}
    row = arqs_by_uuid(store)[arq]
    assert (row.state, row.hostname, row.instance_uuid, row.attach_handle_id) == (
        ARQState.UNBOUND, None, None, None)
    assert handles_in_use(store) == set()
    assert bind(store, arq, target(tree)) == ARQState.BOUND  # Unbound may be bound again


@pytest.mark.parametrize("case", ["unknown-rp", "other-host", "maintaining", "no-free-handle"])
def test_finish_bind_fails_cleanly(store, case):
    tree = add_device(store, handles_per_deployable=1)
    first, arq = new_arqs(store, 2)
    if case == "no-free-handle":
        assert bind(store, first, target(tree)) == ARQState.BOUND
    if case == "maintaining":
        store.transact(lambda s: s.get(Device, tree.device_id).__setattr__("status", "maintaining"))
    tgt = target(tree, hostname="host2" if case == "other-host" else "host1")
    if case == "unknown-rp":
        tgt = BindTarget(hostname="host1", device_rp_uuid=str(uuid.uuid4()), instance_uuid=str(uuid.uuid4()))
    before = handles_in_use(store)
    assert bind(store, arq, tgt) == ARQState.BIND_FAILED
    row = arqs_by_uuid(store)[arq]
    assert row.bind_error and row.attach_handle_id is None and row.nova_event_pending is True
    assert handles_in_use(store) == before


def test_start_bind_is_all_or_nothing(store):
    tree = add_device(store, handles_per_deployable=2)
    good, bound = new_arqs(store, 2)
    assert bind(store, bound, target(tree)) == ARQState.BOUND
    with pytest.raises(arq_state.StateConflict):  # binding a Bound ARQ
        store.transact(arq_state.start_bind, {good: target(tree), bound: target(tree)})
    with pytest.raises(arq_state.NotFoundError):
        store.transact(arq_state.start_bind, {good: target(tree), str(uuid.uuid4()): target(tree)})
    with pytest.raises(arq_state.NotFoundError):  # another project's ARQ is invisible
        store.transact(arq_state.start_bind, {good: target(tree)}, "other-project")
    taken = arqs_by_uuid(store)[bound].instance_uuid
    with pytest.raises(arq_state.InvalidError, match="already has accelerator requests"):
        store.transact(arq_state.start_bind, {good: target(tree, instance=taken)})
    row = arqs_by_uuid(store)[good]
    assert row.state == ARQState.INITIAL and row.hostname is None


def test_transitions_are_compare_and_set(store):
    tree = add_device(store)
    (arq,) = new_arqs(store)
    with pytest.raises(arq_state.StateConflict):  # Initial -> Bound is not allowed
        store.transact(arq_state.finish_bind, arq)
    arq_id = arqs_by_uuid(store)[arq].id
    with pytest.raises(arq_state.StateConflict):  # a row that left the source states: lost race
        store.transact(arq_state._cas, arq_id, ARQState.BOUND)
    store.transact(arq_state.start_bind, {arq: target(tree)})
    store.transact(unbind, [arq])  # BindStarted -> Unbound: the pending finish must lose
    with pytest.raises(arq_state.StateConflict):
        store.transact(arq_state.finish_bind, arq)
    with pytest.raises(arq_state.StateConflict):  # Unbound -> Unbound is not a transition
        store.transact(unbind, [arq])
    assert handles_in_use(store) == set() and arqs_by_uuid(store)[arq].state == ARQState.UNBOUND


def test_unbind_of_a_handle_not_in_use_is_unbind_failed(store):
    tree = add_device(store)
    (arq,) = new_arqs(store)
    bind(store, arq, target(tree))
    store.transact(lambda s: s.get(AttachHandle, tree.handle_ids[0]).__setattr__("in_use", False))
    assert store.transact(unbind, [arq]) == {arq: ARQState.UNBIND_FAILED}
    assert arqs_by_uuid(store)[arq].bind_error


def test_fail_bind_releases_the_handle(store):
    tree = add_device(store)
    (arq,) = new_arqs(store)
    bind(store, arq, target(tree))
    assert store.transact(arq_state.fail_bind, arq, "mdev creation failed") == ARQState.BIND_FAILED
    row = arqs_by_uuid(store)[arq]
    assert row.bind_error == "mdev creation failed" and row.attach_handle_id is None
    assert handles_in_use(store) == set()


def test_a_held_handle_stays_the_arqs_until_the_bind_completes(store):
    """hold_handle claims but leaves the ARQ BindStarted (no Nova event owed yet); holding again
    (a resumed bind) and completing keep the same handle, in finish_bind and in finish_binds."""
    tree = add_device(store, handles_per_deployable=3)
    a, b = new_arqs(store, 2)
    store.transact(arq_state.start_bind, {a: target(tree), b: target(tree)})
    for arq in (a, b):
        assert store.transact(arq_state.hold_handle, arq) == ARQState.BIND_STARTED
    rows = arqs_by_uuid(store)
    held = {u: rows[u].attach_handle_id for u in (a, b)}
    assert None not in held.values() and len(set(held.values())) == 2
    assert all(rows[u].state == ARQState.BIND_STARTED and rows[u].nova_event_pending is False for u in (a, b))
    assert handles_in_use(store) == set(held.values())

    assert store.transact(arq_state.hold_handle, a) == ARQState.BIND_STARTED  # resumed: same handle
    assert store.transact(arq_state.finish_bind, a) == ARQState.BOUND
    assert store.transact(arq_state.finish_binds, [b]) == {b: "Bound"}
    rows = arqs_by_uuid(store)
    assert {u: rows[u].attach_handle_id for u in (a, b)} == held
    assert all(rows[u].state == ARQState.BOUND and rows[u].nova_event_pending is True for u in (a, b))
    assert rows[a].deployable_id == tree.deployable_ids[0]
    assert handles_in_use(store) == set(held.values())  # the third handle was never touched


def test_unbind_or_failure_of_a_held_bind_gives_the_handle_back(store):
    tree = add_device(store, handles_per_deployable=2)
    a, b = new_arqs(store, 2)
    store.transact(arq_state.start_bind, {a: target(tree), b: target(tree)})
    for arq in (a, b):
        store.transact(arq_state.hold_handle, arq)
    assert store.transact(unbind, [a]) == {a: ARQState.UNBOUND}
    assert store.transact(arq_state.fail_bind, b, "mdev creation failed") == ARQState.BIND_FAILED
    assert handles_in_use(store) == set()
    with pytest.raises(arq_state.StateConflict):  # the binder finds it unbound: nothing to finish
        store.transact(arq_state.finish_bind, a)
    assert store.query(bind_plan.in_flight) == []


def test_delete_releases_handles_and_reports_missing(store):
    tree = add_device(store, handles_per_deployable=2)
    a, b, c = new_arqs(store, 3)
    tgt = target(tree)
    store.transact(arq_state.start_bind, {a: tgt, b: tgt})
    for arq in (a, b):
        store.transact(arq_state.finish_bind, arq)
    assert len(handles_in_use(store)) == 2
    with pytest.raises(arq_state.ServiceTokenRequired, match=tgt.instance_uuid):
        store.transact(arq_state.delete_arqs, [c, a], allow_bound=False)
    assert set(arqs_by_uuid(store)) == {a, b, c}
    ghost = str(uuid.uuid4())
    assert store.transact(arq_state.delete_arqs, [a, ghost]) == [ghost]
    assert len(handles_in_use(store)) == 1
    assert store.transact(arq_state.delete_arqs, None, tgt.instance_uuid) == []
    assert set(arqs_by_uuid(store)) == {c} and handles_in_use(store) == set()
    assert store.transact(arq_state.delete_arqs, None, tgt.instance_uuid) == []  # idempotent by instance


def test_concurrent_binds_for_one_instance_admit_one_request(store):
    tree = add_device(store)
    arqs = new_arqs(store, 8)
    for a, b in zip(arqs[::2], arqs[1::2], strict=True):
        tgt = target(tree)
        barrier = threading.Barrier(2)

        def start(arq_uuid: str, tgt=tgt, barrier=barrier) -> str:
            barrier.wait()
            try:
                store.transact(arq_state.start_bind, {arq_uuid: tgt})
                return "started"
            except arq_state.InvalidError:
                return "refused"

        with ThreadPoolExecutor(2) as pool:
            assert sorted(pool.map(start, (a, b))) == ["refused", "started"]


def test_fifty_concurrent_binds_on_five_handles(store):
    tree = add_device(store, handles_per_deployable=5)
    arqs = new_arqs(store, 50)
    store.transact(arq_state.start_bind, {u: target(tree) for u in arqs})
    barrier = threading.Barrier(50)

    def finish(arq_uuid: str) -> ARQState:
        barrier.wait()
        return store.transact(arq_state.finish_bind, arq_uuid)

    with ThreadPoolExecutor(50) as pool:
        states = list(pool.map(finish, arqs))
    assert states.count(ARQState.BOUND) == 5 and states.count(ARQState.BIND_FAILED) == 45
    rows = arqs_by_uuid(store).values()
    claimed = [r.attach_handle_id for r in rows if r.state == ARQState.BOUND]
    assert sorted(claimed) == sorted(tree.handle_ids)  # every handle once, none twice
    assert handles_in_use(store) == set(tree.handle_ids)
    assert all(r.attach_handle_id is None for r in rows if r.state == ARQState.BIND_FAILED)


def test_one_batch_claims_on_many_deployables(store):
    """finish_binds claims for all the deployables of a batch at once: each gets its own handles,
    in id order, and a deployable that runs out fails only its own surplus ARQs."""
    tree = add_device(store, deployables=3, handles_per_deployable=2)
    arqs = new_arqs(store, 5)
    on = [0, 0, 0, 1, 2]  # three ARQs want the first deployable's two handles
    store.transact(arq_state.start_bind, {u: BindTarget("host1", tree.rp_uuids[d], str(uuid.uuid4()), "proj")
                                          for u, d in zip(arqs, on, strict=True)})
    out = store.transact(arq_state.finish_binds, arqs)
    assert [out[u] for u in arqs] == ["Bound", "Bound", "BindFailed", "Bound", "Bound"]
    rows = arqs_by_uuid(store)
    assert "No free attach handle on deployable" in rows[arqs[2]].bind_error
    by_dep = store.query(lambda s: {h.id: h.deployable_id for h in s.scalars(select(AttachHandle))})
    held = [rows[u].attach_handle_id for u in arqs if out[u] == "Bound"]
    assert len(set(held)) == 4 and handles_in_use(store) == set(held)
    assert [by_dep[h] for h in held] == [rows[u].deployable_id for u in arqs if out[u] == "Bound"]
    first = sorted(h for h, d in by_dep.items() if d == rows[arqs[0]].deployable_id)
    assert [rows[arqs[0]].attach_handle_id, rows[arqs[1]].attach_handle_id] == first


def test_concurrent_batches_over_many_deployables(store):
    """Four binders' batches race for the same 12 handles on 4 deployables: every handle is
    claimed exactly once (PostgreSQL: the picks skip each other's locked rows and retry)."""
    tree = add_device(store, deployables=4, handles_per_deployable=3)
    arqs = new_arqs(store, 40)
    store.transact(arq_state.start_bind, {u: BindTarget("host1", tree.rp_uuids[i % 4], str(uuid.uuid4()), "proj")
                                          for i, u in enumerate(arqs)})
    barrier = threading.Barrier(4)

    def finish(batch: list[str]) -> dict[str, str]:
        barrier.wait()
        return store.transact(arq_state.finish_binds, batch)

    with ThreadPoolExecutor(4) as pool:
        results = [r for out in pool.map(finish, [arqs[i::4] for i in range(4)]) for r in out.values()]
    assert results.count("Bound") == 12 and results.count("BindFailed") == 28
    claimed = [r.attach_handle_id for r in arqs_by_uuid(store).values() if r.state == ARQState.BOUND]
    assert sorted(claimed) == sorted(tree.handle_ids) and handles_in_use(store) == set(tree.handle_ids)

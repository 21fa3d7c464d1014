"""A binder batch's transaction: plans of the ARQs, the quick binds finished at once and the slow
ones (as the binder's predicate says) left BindStarted; what unbinds release."""

from __future__ import annotations

import uuid

from factories import add_device, add_profile

from rayborg.store import arq_state, bind_plan
from rayborg.store.arq_state import BindTarget


def test_finish_quick_leaves_the_slow_binds(store):
    add_profile(store, "dp", [{"resources:FPGA": "1"}])
    fpga = add_device(store, "host1", handles_per_deployable=1)
    vgpu = add_device(store, "host1", type="GPU", rc="FPGA", attach_type="MDEV", driver_name="nvidia_vgpu", bus=0x86)
    quick, slow = [a.uuid for _ in range(2) for a in store.transact(arq_state.create_arqs, "dp", "p1")]
    store.transact(arq_state.start_bind, {quick: BindTarget("host1", fpga.rp_uuids[0], str(uuid.uuid4())),
                                          slow: BindTarget("host1", vgpu.rp_uuids[0], str(uuid.uuid4()))})
    plans, states = store.transact(bind_plan.finish_quick, [quick, slow, str(uuid.uuid4())],
                                   lambda plan: plan.driver_name == "nvidia_vgpu")
    assert set(plans) == {quick, slow} and states == {quick: "Bound"}
    assert plans[slow].state == "BindStarted" and plans[slow].deployable_id == vgpu.deployable_ids[0]
    assert store.query(bind_plan.in_flight) == [(slow, plans[slow].instance_uuid)]
    assert store.query(bind_plan.instances, [quick]) == {quick: plans[quick].instance_uuid}


def test_record_bitstream(store):
    tree = add_device(store)
    store.transact(bind_plan.record_bitstream, tree.deployable_ids[0], "bits-1")
    add_profile(store, "dp", [{"resources:FPGA": "1", "accel:bitstream_id": "bits-1"}])
    (arq,) = [a.uuid for a in store.transact(arq_state.create_arqs, "dp", "p1")]
    store.transact(arq_state.start_bind, {arq: BindTarget("host1", tree.rp_uuids[0], str(uuid.uuid4()))})
    assert store.query(bind_plan.load_many, [arq])[arq].bitstream_id is None  # loaded already: no programming

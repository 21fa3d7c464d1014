"""Attach handles: what a bound ARQ holds, with its host and driver (for prepare/unprepare), and
the stored attach_info read leniently."""

from __future__ import annotations

import uuid

from factories import add_device, add_profile

from rayborg.store import arq_state, attach_handles
from rayborg.store.arq_state import BindTarget


def test_held_names_host_driver_and_handle(store):
    add_profile(store, "vgpu", [{"resources:VGPU": "1"}])
    tree = add_device(store, "host7", type="GPU", rc="VGPU", traits=(), attach_type="MDEV",
                      driver_name="nvidia_vgpu")
    (arq,) = [r.uuid for r in store.transact(arq_state.create_arqs, "vgpu", "p1")]
    instance = str(uuid.uuid4())
    assert store.query(attach_handles.held, [arq]) == []  # holds nothing yet
    store.transact(arq_state.start_bind, {arq: BindTarget("host7", tree.rp_uuids[0], instance)})
    store.transact(arq_state.hold_handle, arq)
    (held,) = store.query(attach_handles.held, [arq, str(uuid.uuid4())])
    assert (held.arq_uuid, held.instance_uuid, held.hostname, held.driver_name, held.attach_type) == (
        arq, instance, "host7", "nvidia_vgpu", "MDEV")
    assert held.attach_info == {"bus": "5e", "device": "00", "domain": "0000", "function": "0"}
    assert len(held.uuid) == 36


def test_parse_handle_info():
    assert attach_handles.parse_handle_info('{"a": 1}') == {"a": "1"}
    assert attach_handles.parse_handle_info("not json") == {} and attach_handles.parse_handle_info(None) == {}
    assert attach_handles.parse_handle_info("[1]") == {}

"""Host reports into the store, and the store into the real Placement: creates, updates, removals,
zero calls when nothing changed, O(1) calls for one change, disabled devices reserved, resumable."""

import uuid

import pytest
from sqlmodel import select

from rayborg.actors.placement_client import PlacementClient, PlacementUnavailable
from rayborg.actors.placement_push import push
from rayborg.drivers.base import (ControlPathId, DriverAttachHandle, DriverDeployable, DriverDevice,
                                  HostReport)
from rayborg.store.host_reports import apply_report
from rayborg.store.hosts import mark_lost
from rayborg.store.placement_marks import mark_device_dirty
from rayborg.store.placement_state import provider_uuid
from rayborg.store.tables import AttachHandle, Attribute, Deployable, Device, PlacementTombstone


def _device(host: str, bus: int, handles: int = 2, traits=("CUSTOM_FPGA_INTEL",)) -> DriverDevice:
    addr = f"0000:{bus:02x}:00.0"
    return DriverDevice(
        type="FPGA", vendor="0x8086", model="0x09c4", key=f"intel_fpga:{addr}",
        std_board_info={"device_id": "0x09c4", "class": "0x120000"},
        controlpath_id=ControlPathId(cpid_info={"domain": "0000", "bus": f"{bus:02x}", "device": "00",
                                                "function": "0"}),
        deployables=[DriverDeployable(
            name=f"{host}_{addr.replace(':', '_').replace('.', '_')}", num_accelerators=handles,
            driver_name="intel_fpga", resource_class="FPGA", traits=list(traits),
            attach_handles=[DriverAttachHandle(attach_type="PCI", attach_info={
                "domain": "0000", "bus": f"{bus:02x}", "device": "00", "function": str(f)})
                for f in range(handles)])])


def _report(host: str, *devices: DriverDevice) -> HostReport:
    return HostReport(hostname=host, drivers=["intel_fpga"], devices=list(devices))


def test_first_report_creates_tree_and_rps(store, placement, host):
    diff = store.transact(apply_report, _report(host, _device(host, 0x5e), _device(host, 0x5f)))
    assert len(diff.added) == 2 and not diff.removed
    result = push(store, placement, host)
    assert result.pushed == 2 and result.complete

    def check(session):
        deps = list(session.exec(select(Deployable)))
        assert {d.placement_dirty for d in deps} == {False}
        assert len(list(session.exec(select(AttachHandle)))) == 4
        assert {a.key: a.value for a in session.exec(select(Attribute)).all()[:2]}["rc"] == "FPGA"
        return deps

    for dep in store.query(check):
        rp = placement.get_provider(dep.rp_uuid)
        assert rp["parent_provider_uuid"] == provider_uuid(host)
        assert placement.get_inventories(dep.rp_uuid)[1]["FPGA"]["total"] == 2
        assert sorted(placement.get_traits(dep.rp_uuid)[1]) == ["CUSTOM_FPGA_INTEL", "OWNER_CYBORG"]


def test_unchanged_report_costs_zero_placement_calls(store, placement, host):
    report = _report(host, _device(host, 0x5e))
    store.transact(apply_report, report)
    push(store, placement, host)
    uuids_before = store.query(lambda s: sorted(d.uuid for d in s.exec(select(Deployable))))
    placement.calls.clear()
    diff = store.transact(apply_report, _report(host, _device(host, 0x5e)))
    assert diff.empty
    push(store, placement, host)
    assert sum(placement.calls.values()) == 0
    assert store.query(lambda s: sorted(d.uuid for d in s.exec(select(Deployable)))) == uuids_before


def test_one_changed_device_costs_constant_calls(store, placement, host):
    devices = [_device(host, bus) for bus in range(0x10, 0x18)]
    store.transact(apply_report, _report(host, *devices))
    push(store, placement, host)
    placement.calls.clear()
    devices[3] = _device(host, 0x13, traits=("CUSTOM_FPGA_INTEL", "CUSTOM_FPGA_FUNCTION_ID_INTEL_GZIP"))
    diff = store.transact(apply_report, _report(host, *devices))
    assert len(diff.changed) == 1
    push(store, placement, host)
    # the new trait is created once, then the RP's traits are replaced: O(1), whatever the host size
    assert placement.writes == 2 and sum(placement.calls.values()) <= 5


def test_removed_device_leaves_store_and_placement(store, placement, host):
    a, b = _device(host, 0x5e), _device(host, 0x5f)
    store.transact(apply_report, _report(host, a, b))
    push(store, placement, host)
    gone_rp = provider_uuid(b.deployables[0].name)
    diff = store.transact(apply_report, _report(host, a))
    assert diff.devices_removed == 1
    assert store.query(lambda s: len(list(s.exec(select(Device))))) == 1
    result = push(store, placement, host)
    assert result.deleted == 1
    assert placement.get_provider(gone_rp) is None
    assert store.query(lambda s: list(s.exec(select(PlacementTombstone)))) == []


def test_disabled_device_is_reserved(store, placement, host):
    store.transact(apply_report, _report(host, _device(host, 0x5e)))
    push(store, placement, host)

    def disable(session):
        dev = session.exec(select(Device)).one()
        dev.status = "maintaining"
        mark_device_dirty(session, dev.id)
        return session.exec(select(Deployable)).one().rp_uuid

    rp = store.transact(disable)
    placement.calls.clear()
    push(store, placement, host)
    assert placement.writes == 1
    assert placement.get_inventories(rp)[1]["FPGA"]["reserved"] == 2


def test_lost_host_is_reserved_in_devices_calls_and_back_unreserved(store, placement, host):
    devices = [_device(host, bus) for bus in range(0x10, 0x18)]
    store.transact(apply_report, _report(host, *devices))
    push(store, placement, host)
    rps = [provider_uuid(d.deployables[0].name) for d in devices]
    placement.calls.clear()
    store.transact(mark_lost, host)
    push(store, placement, host)
    # a read and a write of each device's inventory, and the compute node's lookup: O(its devices)
    assert placement.writes == len(devices) and sum(placement.calls.values()) <= 2 * len(devices) + 1
    assert {placement.get_inventories(rp)[1]["FPGA"]["reserved"] for rp in rps} == {2}
    store.transact(apply_report, _report(host, *devices))  # its node is back and reports again
    push(store, placement, host)
    assert {placement.get_inventories(rp)[1]["FPGA"]["reserved"] for rp in rps} == {0}


def test_no_compute_node_waits_and_placement_down_keeps_marks(store, placement_server):
    host = f"nowhere-{uuid.uuid4().hex[:6]}"
    store.transact(apply_report, _report(host, _device(host, 0x5e)))
    result = push(store, PlacementClient(placement_server.url), host)
    assert result.waiting_for_compute_node == [host] and result.pushed == 0
    with pytest.raises(PlacementUnavailable):
        push(store, PlacementClient("http://127.0.0.1:9", timeout=2), host)
    assert store.query(lambda s: s.exec(select(Deployable)).one().placement_dirty) is True

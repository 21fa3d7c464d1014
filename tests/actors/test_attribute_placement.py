"""Operator edits of `traitN` and `rc` attributes, through the attribute API, reach the real Placement
by the PlacementSync push, and survive the host's next report (the operator's rows win over the
driver's); deleting them takes them out of Placement again. SQLite and PostgreSQL (the `store` fixture)."""

from __future__ import annotations

import uuid

import pytest
from sqlmodel import select

from rayborg.actors.placement_client import PlacementClient
from rayborg.actors.placement_push import push
from rayborg.drivers.base import (ControlPathId, DriverAttachHandle, DriverDeployable, DriverDevice,
                                  HostReport)
from rayborg.store.host_reports import apply_report
from rayborg.store.placement_state import OWNER_CYBORG, provider_uuid
from rayborg.store.tables import Attribute, Deployable


def _device(host: str, traits=("CUSTOM_FPGA_INTEL",), rc: str = "FPGA") -> DriverDevice:
    addr = "0000:5e:00.0"
    return DriverDevice(
        type="FPGA", vendor="0x8086", model="0x09c4", key=f"intel_fpga:{addr}",
        std_board_info={"device_id": "0x09c4", "class": "0x120000"},
        controlpath_id=ControlPathId(cpid_info={"domain": "0000", "bus": "5e", "device": "00", "function": "0"}),
        deployables=[DriverDeployable(
            name=f"{host}_0000_5e_00_0", num_accelerators=2, driver_name="intel_fpga", resource_class=rc,
            traits=list(traits),
            attach_handles=[DriverAttachHandle(attach_type="PCI", attach_info={
                "domain": "0000", "bus": "5e", "device": "00", "function": str(f)}) for f in range(2)])])


def _report(host: str, **kw) -> HostReport:
    return HostReport(hostname=host, drivers=["intel_fpga"], devices=[_device(host, **kw)])


@pytest.fixture
def placement(placement_server):
    return PlacementClient(placement_server.url)


@pytest.fixture
def host(store, placement):
    """A compute node RP (as Nova makes it) and the host's first report, pushed."""
    name = f"compute-{uuid.uuid4().hex[:8]}"
    resp = placement._request("POST", "/resource_providers", {"name": name, "uuid": provider_uuid(name)})
    assert resp.status_code == 200
    store.transact(apply_report, _report(name))
    assert push(store, placement, name).complete
    return name


def _deployable(store) -> tuple[str, str]:
    dep = store.query(lambda s: s.exec(select(Deployable)).one())
    return dep.uuid, dep.rp_uuid


def _traits(placement, rp: str) -> list[str]:
    return sorted(placement.get_traits(rp)[1])


def _inventory(placement, rp: str) -> dict:
    return {rc: inv["total"] for rc, inv in placement.get_inventories(rp)[1].items()}


def _sources(store) -> dict[str, tuple[str, str]]:
    return store.query(lambda s: {a.key: (a.value, a.source) for a in s.exec(select(Attribute))})


def _push(store, placement, host) -> None:
    result = push(store, placement, host)
    assert result.complete, result


async def test_operator_trait_reaches_placement_survives_reports_and_goes(client, store, placement, host):
    dep, rp = _deployable(store)
    assert _traits(placement, rp) == ["CUSTOM_FPGA_INTEL", OWNER_CYBORG]

    resp = await client.post(f"/v2/deployable/{dep}/attribute",
                             json=[{"key": "trait5", "value": "CUSTOM_PHYSNET_A"}, {"key": "phys_net", "value": "a"}])
    assert resp.status == 204
    _push(store, placement, host)
    assert _traits(placement, rp) == ["CUSTOM_FPGA_INTEL", "CUSTOM_PHYSNET_A", OWNER_CYBORG]

    # the same host reports again (the driver knows nothing of trait5): the operator's rows stay, and
    # nothing changes in Placement
    diff = store.transact(apply_report, _report(host))
    assert diff.empty
    assert _sources(store)["trait5"] == ("CUSTOM_PHYSNET_A", "operator")
    placement.calls.clear()
    _push(store, placement, host)
    assert sum(placement.calls.values()) == 0
    assert _traits(placement, rp) == ["CUSTOM_FPGA_INTEL", "CUSTOM_PHYSNET_A", OWNER_CYBORG]

    # a report that changes the driver's traits keeps the operator's one beside them
    store.transact(apply_report, _report(host, traits=("CUSTOM_FPGA_INTEL", "CUSTOM_NEW")))
    _push(store, placement, host)
    assert _traits(placement, rp) == ["CUSTOM_FPGA_INTEL", "CUSTOM_NEW", "CUSTOM_PHYSNET_A", OWNER_CYBORG]

    # update by uuid, then delete by key (the plural spelling): Placement follows each
    attr_uuid = (await (await client.get(f"/v2/deployable/{dep}/attribute/trait5")).json())["attribute"]["uuid"]
    assert (await client.put(f"/v2/deployable/{dep}/attribute/{attr_uuid}", json={"value": "CUSTOM_PHYSNET_B"})).status == 204
    _push(store, placement, host)
    assert _traits(placement, rp) == ["CUSTOM_FPGA_INTEL", "CUSTOM_NEW", "CUSTOM_PHYSNET_B", OWNER_CYBORG]
    assert (await client.delete(f"/v2/deployables/{dep}/attributes/trait5")).status == 204
    _push(store, placement, host)
    assert _traits(placement, rp) == ["CUSTOM_FPGA_INTEL", "CUSTOM_NEW", OWNER_CYBORG]
    store.transact(apply_report, _report(host, traits=("CUSTOM_FPGA_INTEL", "CUSTOM_NEW")))
    _push(store, placement, host)
    assert _traits(placement, rp) == ["CUSTOM_FPGA_INTEL", "CUSTOM_NEW", OWNER_CYBORG]
    assert "trait5" not in _sources(store) and _sources(store)["phys_net"] == ("a", "operator")


async def test_operator_override_of_driver_trait_and_rc_wins_over_reports(client, store, placement, host):
    dep, rp = _deployable(store)
    assert (await client.put(f"/v2/deployable/{dep}/attribute/trait0", json={"value": "CUSTOM_OVERRIDE"})).status == 204
    assert (await client.put(f"/v2/deployable/{dep}/attribute/rc", json={"value": "CUSTOM_ACCEL"})).status == 204
    _push(store, placement, host)
    assert _traits(placement, rp) == ["CUSTOM_OVERRIDE", OWNER_CYBORG]
    assert _inventory(placement, rp) == {"CUSTOM_ACCEL": 2}

    # the driver still reports trait0 = CUSTOM_FPGA_INTEL and rc = FPGA: the operator's values win
    for report in (_report(host), _report(host, traits=("CUSTOM_FPGA_INTEL", "CUSTOM_MORE"))):
        store.transact(apply_report, report)
        _push(store, placement, host)
        assert _sources(store)["trait0"] == ("CUSTOM_OVERRIDE", "operator")
        assert _sources(store)["rc"] == ("CUSTOM_ACCEL", "operator")
        assert _inventory(placement, rp) == {"CUSTOM_ACCEL": 2}
    assert _traits(placement, rp) == ["CUSTOM_MORE", "CUSTOM_OVERRIDE", OWNER_CYBORG]

    # a report without trait0 at all does not delete the operator's trait0
    store.transact(apply_report, _report(host, traits=()))
    _push(store, placement, host)
    assert _traits(placement, rp) == ["CUSTOM_OVERRIDE", OWNER_CYBORG]

    # the operator gives the keys back: deleted, the driver's values return with its next report
    assert (await client.delete(f"/v2/deployable/{dep}/attribute/trait0")).status == 204
    assert (await client.delete(f"/v2/deployable/{dep}/attribute/rc")).status == 204
    _push(store, placement, host)
    assert _traits(placement, rp) == [OWNER_CYBORG]
    store.transact(apply_report, _report(host))
    _push(store, placement, host)
    assert _traits(placement, rp) == ["CUSTOM_FPGA_INTEL", OWNER_CYBORG]
    assert _inventory(placement, rp) == {"FPGA": 2}
    assert _sources(store)["trait0"] == ("CUSTOM_FPGA_INTEL", "driver")


async def test_flat_api_trait_reaches_placement(client, store, placement, host):
    dep_id = store.query(lambda s: s.exec(select(Deployable.id)).one())
    _, rp = _deployable(store)
    resp = await client.post("/v2/attributes", json={"deployable_id": dep_id, "key": "trait3", "value": "CUSTOM_FLAT"})
    assert resp.status == 201
    _push(store, placement, host)
    assert _traits(placement, rp) == ["CUSTOM_FLAT", "CUSTOM_FPGA_INTEL", OWNER_CYBORG]
    store.transact(apply_report, _report(host))
    _push(store, placement, host)
    assert "CUSTOM_FLAT" in _traits(placement, rp)
    assert (await client.delete(f"/v2/attributes/{(await resp.json())['uuid']}")).status == 204
    _push(store, placement, host)
    assert _traits(placement, rp) == ["CUSTOM_FPGA_INTEL", OWNER_CYBORG]

"""Disable/enable over REST in the Ray runtime against the real Placement: a disable with a reason
sets `reserved` = total on every RP of the device (PlacementSync, nudged by the front door), binds
to it are refused by the Ray binders with the reason, standalone binds go elsewhere, and enable
puts `reserved` back to 0."""

from __future__ import annotations

import uuid

import pytest
from factories import nova_bind_ops
from runtime_helpers import NOVA, create_arq, fpga_rest_runtime, resolved, until
from sqlmodel import select

from rayborg.actors.placement_client import PlacementClient
from rayborg.store.queries import operator
from rayborg.store.tables import Deployable, Device

pytestmark = [pytest.mark.xdist_group("ray"), pytest.mark.slow]


def device_rps(store, host: str) -> dict[str, list[str]]:
    """device uuid -> its RP uuids, on `host`."""
    rows = store.query(lambda s: list(s.exec(select(Device.uuid, Deployable.rp_uuid)
                                             .join(Deployable, Deployable.device_id == Device.id)
                                             .where(Device.hostname == host).order_by(Deployable.name))))
    out: dict[str, list[str]] = {}
    for dev, rp in rows:
        out.setdefault(dev, []).append(rp)
    return out


def inventories(placement: PlacementClient, rps: list[str]) -> list[tuple[int, int]]:
    """(total, reserved) of each RP's inventory (one resource class each)."""
    out = []
    for rp in rps:
        _, inv = placement.get_inventories(rp)
        ((_, one),) = inv.items()
        out.append((one["total"], one["reserved"]))
    return out


@pytest.fixture
async def env(ray_cluster, placement_server, nova, tmp_path):
    async with fpga_rest_runtime(placement_server, nova, tmp_path, nudge_placement_sync=True) as env:
        yield env  # as `rayborg serve` does, the front door nudges PlacementSync


async def test_disable_reserves_everything_in_placement_refuses_binds_and_enable_gives_it_back(env):
    client, store, placement = env["client"], env["store"], env["placement"]
    devices = device_rps(store, "host-a")
    assert len(devices) == 2
    (off, off_rps), (on, on_rps) = sorted(devices.items())
    assert all(reserved == 0 for _, reserved in inventories(placement, off_rps + on_rps))

    resp = await client.post(f"/v2/devices/{off}/disable", json={"reason": "fan failure"})
    assert resp.status == 200, await resp.text()
    await until(lambda: all(t == r and t > 0 for t, r in inventories(placement, off_rps)),
                "reserved = total on the disabled device's RPs")
    assert all(r == 0 for _, r in inventories(placement, on_rps))  # the other device is untouched

    # A Nova bind naming the disabled device: BindFailed from the Ray binder, with the reason.
    arq = await create_arq(client)
    resp = await client.patch("/v2/accelerator_requests", headers=NOVA,
                              json={arq: nova_bind_ops("host-a", off_rps[0], str(uuid.uuid4()))})
    assert resp.status == 202, await resp.text()
    assert (await resolved(client, arq))["state"] == "BindFailed"
    (failed,) = store.query(operator.arqs, "BindFailed")
    assert failed["bind_error"] == f"Device {off} is disabled (fan failure)"

    # A standalone bind on that host gets the enabled device.
    arq = await create_arq(client)
    resp = await client.patch("/v2/accelerator_requests", headers=NOVA, json={arq: [
        {"op": "add", "path": "/hostname", "value": "host-a"},
        {"op": "add", "path": "/instance_uuid", "value": str(uuid.uuid4())}]})
    assert resp.status == 202, await resp.text()
    shown = await resolved(client, arq)
    assert shown["state"] == "Bound" and shown["device_rp_uuid"] in on_rps, shown

    assert (await client.post(f"/v2/devices/{off}/enable")).status == 200
    await until(lambda: all(r == 0 for _, r in inventories(placement, off_rps)), "reserved back to 0")
    shown = await (await client.get(f"/v2/devices/{off}", headers={"OpenStack-API-Version": "accelerator 2.3"})).json()
    assert (shown["status"], shown["status_reason"]) == ("enabled", None)
    arq = await create_arq(client)
    await client.patch("/v2/accelerator_requests", headers=NOVA,
                       json={arq: nova_bind_ops("host-a", off_rps[0], str(uuid.uuid4()))})
    assert (await resolved(client, arq))["state"] == "Bound"

"""Disable/enable over REST in the Ray runtime against the real Placement: a disable with a reason
sets `reserved` = total on every RP of the device (PlacementSync, nudged by the front door), binds
to it are refused by the Ray binders with the reason, standalone binds go elsewhere, and enable
puts `reserved` back to 0."""

from __future__ import annotations

import asyncio
import random
import time
import uuid

import pytest
import ray
from aiohttp.test_utils import TestClient, TestServer
from factories import add_profile, nova_bind_ops
from runtime_helpers import kill_runtime, make_compute_nodes, start_runtime
from sqlmodel import select

from rayborg.actors.placement_client import PlacementClient
from rayborg.actors.runtime_config import NAMESPACE, PLACEMENT_SYNC_NAME, RuntimeConfig
from rayborg.api.app import create_app
from rayborg.api.app_keys import PLACEMENT_SYNC
from rayborg.api.ray_binder import RayBinder
from rayborg.settings import Settings
from rayborg.store.engine import Store
from rayborg.store.migrate import upgrade
from rayborg.store.queries import operator
from rayborg.store.tables import Deployable, Device

pytestmark = [pytest.mark.xdist_group("ray"), pytest.mark.slow]
HOSTS = ("host-a", "host-b", "host-c")
NOVA = {"X-Project-Id": "p1", "X-User-Id": "u1", "X-Roles": "member", "X-Service-Roles": "service"}


async def until(predicate, what: str, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await asyncio.to_thread(predicate)
        if value:
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


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
    url = f"sqlite:///{tmp_path / 'rayborg.db'}"
    store = Store(url)
    upgrade(store.engine)
    make_compute_nodes(placement_server.url, HOSTS)
    seed = random.randrange(1, 4000)
    config = RuntimeConfig(
        database_url=url, placement_url=placement_server.url, nova_url=nova.url, report_interval=0.5,
        retry_interval=0.2, fake_devices="fpga:2x2",
        host_overrides={h: {"driver_options": {"fake": {"seed": seed + i * 7}}} for i, h in enumerate(HOSTS)})
    await asyncio.to_thread(start_runtime, config)
    placement = PlacementClient(placement_server.url)

    def synced() -> bool:
        rps = store.query(lambda s: [d.rp_uuid for d in s.exec(select(Deployable))])
        return len(rps) == 6 and all(placement.get_provider(rp) is not None for rp in rps)

    await until(synced, "6 device RPs in Placement")
    add_profile(store, "fpga1", [{"resources:FPGA": "1"}])
    app = create_app(Settings(database_url=url, _env_file=None), store, RayBinder(store, config.binder_count))
    app[PLACEMENT_SYNC] = ray.get_actor(PLACEMENT_SYNC_NAME, namespace=NAMESPACE)  # as `rayborg serve` does
    async with TestClient(TestServer(app)) as client:
        yield {"client": client, "store": store, "placement": placement}
    await asyncio.to_thread(kill_runtime)
    store.dispose()


async def create_arq(client) -> str:
    resp = await client.post("/v2/accelerator_requests", json={"device_profile_name": "fpga1"}, headers=NOVA)
    assert resp.status == 201, await resp.text()
    return (await resp.json())["arqs"][0]["uuid"]


async def resolved(client, arq: str) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body = await (await client.get(f"/v2/accelerator_requests/{arq}", headers=NOVA)).json()
        if body["state"] != "BindStarted":
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"ARQ {arq} still binding: {body}")


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

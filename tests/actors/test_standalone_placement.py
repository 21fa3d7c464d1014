"""Standalone binds over REST record their allocation in the real Placement, as a consumer, and give
it back on unbind, delete and failure, keeping whatever else the consumer holds; through the real
binder actors on the 3-host Ray cluster."""

from __future__ import annotations

import asyncio
import random
import time
import uuid

import pytest
from aiohttp.test_utils import TestClient, TestServer
from factories import add_profile
from runtime_helpers import assert_handles_consistent, kill_runtime, make_compute_nodes, start_runtime
from sqlmodel import select

from rayborg.actors.placement_client import PlacementClient
from rayborg.actors.runtime_config import RuntimeConfig
from rayborg.api.app import create_app
from rayborg.api.ray_binder import RayBinder
from rayborg.settings import Settings
from rayborg.store.engine import Store
from rayborg.store.migrate import upgrade
from rayborg.store.tables import Deployable, Device, StandaloneAllocation

pytestmark = [pytest.mark.xdist_group("ray"), pytest.mark.slow]
HOSTS = ("host-a", "host-b", "host-c")
NOVA = {"X-Project-Id": "p1", "X-User-Id": "u1", "X-Roles": "member", "X-Service-Roles": "service"}


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
    await until(lambda: _synced(store, placement), "6 device RPs in Placement")
    add_profile(store, "fpga1", [{"resources:FPGA": "1"}])
    app = create_app(Settings(database_url=url, _env_file=None), store, RayBinder(store, config.binder_count))
    async with TestClient(TestServer(app)) as client:
        yield {"client": client, "store": store, "placement": placement, "server": placement_server}
    await asyncio.to_thread(kill_runtime)
    store.dispose()


def _synced(store, placement) -> bool:
    rps = store.query(lambda s: [d.rp_uuid for d in s.exec(select(Deployable))])
    return len(rps) == 6 and all(placement.get_provider(rp) is not None for rp in rps)


async def until(predicate, what: str, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await asyncio.to_thread(predicate)
        if value:
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def allocations(placement, consumer: str) -> dict[str, dict[str, int]]:
    body = placement._request("GET", f"/allocations/{consumer}").json()
    return {rp: a["resources"] for rp, a in body["allocations"].items()}


def rps_of(store, host: str) -> list[str]:
    return store.query(lambda s: [d.rp_uuid for d, _ in s.exec(
        select(Deployable, Device).join(Device, Device.id == Deployable.device_id)
        .where(Device.hostname == host).order_by(Deployable.name))])


def outbox(store) -> list[tuple[str, bool]]:
    return store.query(lambda s: [(r.consumer, r.dirty) for r in s.exec(select(StandaloneAllocation))])


async def create_arq(client) -> str:
    resp = await client.post("/v2/accelerator_requests", json={"device_profile_name": "fpga1"}, headers=NOVA)
    assert resp.status == 201, await resp.text()
    return (await resp.json())["arqs"][0]["uuid"]


async def bind(client, arq: str, instance: str, hostname: str | None = None) -> None:
    ops = [{"op": "add", "path": "/hostname", "value": hostname}] if hostname else []
    ops.append({"op": "add", "path": "/instance_uuid", "value": instance})
    resp = await client.patch("/v2/accelerator_requests", json={arq: ops}, headers=NOVA)
    assert resp.status == 202, await resp.text()


async def resolved(client, arq: str) -> dict:
    async def get():
        resp = await client.get(f"/v2/accelerator_requests/{arq}", headers=NOVA)
        return await resp.json()

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body = await get()
        if body["state"] != "BindStarted":
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"ARQ {arq} still binding: {body}")


async def test_bind_allocates_the_chosen_device_and_unbind_delete_give_it_back(env):
    client, store, placement = env["client"], env["store"], env["placement"]
    arq, instance = await create_arq(client), str(uuid.uuid4())
    await bind(client, arq, instance, hostname="host-b")
    shown = await resolved(client, arq)
    assert shown["state"] == "Bound", shown
    assert shown["device_rp_uuid"] in rps_of(store, "host-b")
    # In Placement before Bound: the binder allocates first.
    assert allocations(placement, instance) == {shown["device_rp_uuid"]: {"FPGA": 1}}
    consumer = placement._request("GET", f"/allocations/{instance}").json()
    assert (consumer["project_id"], consumer["consumer_type"]) == ("p1", "RAYBORG")
    assert outbox(store) == [(instance, False)]

    resp = await client.patch("/v2/accelerator_requests", headers=NOVA,
                              json={arq: [{"op": "remove", "path": "/hostname"}]})
    assert resp.status == 202
    await until(lambda: allocations(placement, instance) == {}, "the allocation to go after unbind")
    await until(lambda: outbox(store) == [], "the outbox row to go")

    # Bound again, on any host; then deleted by instance, as Nova does.
    await bind(client, arq, instance)
    shown = await resolved(client, arq)
    assert shown["state"] == "Bound"
    assert allocations(placement, instance) == {shown["device_rp_uuid"]: {"FPGA": 1}}
    resp = await client.delete(f"/v2/accelerator_requests?instance={instance}", headers=NOVA)
    assert resp.status == 204
    await until(lambda: allocations(placement, instance) == {}, "the allocation to go after delete")
    assert_handles_consistent(store)


async def test_placement_full_fails_the_bind_cleanly_and_keeps_others_allocations(env):
    client, store, placement = env["client"], env["store"], env["placement"]
    # Someone else (a Nova of the same Placement) holds every FPGA of host-a.
    other = str(uuid.uuid4())
    full = {rp: {"resources": {"FPGA": 2}} for rp in rps_of(store, "host-a")}
    resp = placement._request("PUT", f"/allocations/{other}", {
        "allocations": full, "consumer_generation": None, "project_id": "nova", "user_id": "nova",
        "consumer_type": "INSTANCE"})
    assert resp.status_code == 204, resp.text
    arq, instance = await create_arq(client), str(uuid.uuid4())
    await bind(client, arq, instance, hostname="host-a")
    shown = await resolved(client, arq)
    assert shown["state"] == "BindFailed" and shown["attach_handle_uuid"] is None
    assert allocations(placement, instance) == {}
    assert allocations(placement, other) == {rp: a["resources"] for rp, a in full.items()}
    await until(lambda: outbox(store) == [], "the failed bind's outbox row to clear")
    assert_handles_consistent(store)
    placement._request("DELETE", f"/allocations/{other}")


async def test_other_allocations_of_the_consumer_are_kept(env):
    client, store, placement = env["client"], env["store"], env["placement"]
    instance = str(uuid.uuid4())
    theirs = rps_of(store, "host-c")[0]
    resp = placement._request("PUT", f"/allocations/{instance}", {
        "allocations": {theirs: {"resources": {"FPGA": 1}}}, "consumer_generation": None,
        "project_id": "p1", "user_id": "u1", "consumer_type": "INSTANCE"})
    assert resp.status_code == 204, resp.text
    arq = await create_arq(client)
    await bind(client, arq, instance, hostname="host-a")
    shown = await resolved(client, arq)
    assert shown["state"] == "Bound"
    assert allocations(placement, instance) == {theirs: {"FPGA": 1}, shown["device_rp_uuid"]: {"FPGA": 1}}
    assert placement._request("GET", f"/allocations/{instance}").json()["consumer_type"] == "INSTANCE"
    resp = await client.patch("/v2/accelerator_requests", headers=NOVA,
                              json={arq: [{"op": "remove", "path": "/hostname"}]})
    assert resp.status == 202
    await until(lambda: allocations(placement, instance) == {theirs: {"FPGA": 1}}, "only rayborg's part to go")
    placement._request("DELETE", f"/allocations/{instance}")


async def test_release_while_placement_is_down_is_pushed_when_it_returns(env):
    client, store, placement, server = env["client"], env["store"], env["placement"], env["server"]
    arq, instance = await create_arq(client), str(uuid.uuid4())
    await bind(client, arq, instance)
    shown = await resolved(client, arq)
    assert shown["state"] == "Bound"
    await asyncio.to_thread(server.stop)
    try:
        resp = await client.delete(f"/v2/accelerator_requests/{arq}", headers=NOVA)
        assert resp.status == 204  # the store lets go at once; Placement is owed the release
        await asyncio.sleep(1.0)
        assert outbox(store) == [(instance, True)]
    finally:
        await asyncio.to_thread(server.restart, True)
    await until(lambda: allocations(placement, instance) == {}, "the release to reach Placement", timeout=120)
    await until(lambda: outbox(store) == [], "the outbox to empty")

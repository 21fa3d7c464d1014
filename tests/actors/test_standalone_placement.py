"""Standalone binds over REST record their allocation in the real Placement, as a consumer, and give
it back on unbind, delete and failure, keeping whatever else the consumer holds; through the real
binder actors on the 3-host Ray cluster."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from runtime_helpers import (NOVA, allocations, assert_handles_consistent, create_arq, fpga_rest_runtime,
                             resolved, until)
from sqlmodel import select

from rayborg.store.tables import Deployable, Device, StandaloneAllocation

pytestmark = [pytest.mark.xdist_group("ray"), pytest.mark.slow]


@pytest.fixture
async def env(ray_cluster, placement_server, nova, tmp_path):
    async with fpga_rest_runtime(placement_server, nova, tmp_path) as env:
        yield env


def rps_of(store, host: str) -> list[str]:
    return store.query(lambda s: [d.rp_uuid for d, _ in s.exec(
        select(Deployable, Device).join(Device, Device.id == Deployable.device_id)
        .where(Device.hostname == host).order_by(Deployable.name))])


def outbox(store) -> list[tuple[str, bool]]:
    return store.query(lambda s: [(r.consumer, r.dirty) for r in s.exec(select(StandaloneAllocation))])


async def bind(client, arq: str, instance: str, hostname: str | None = None) -> None:
    ops = [{"op": "add", "path": "/hostname", "value": hostname}] if hostname else []
    ops.append({"op": "add", "path": "/instance_uuid", "value": instance})
    resp = await client.patch("/v2/accelerator_requests", json={arq: ops}, headers=NOVA)
    assert resp.status == 202, await resp.text()


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

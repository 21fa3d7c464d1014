"""POST /v2/devices/{uuid}/disable with a reason: the optional body, status_reason in device answers,
bad bodies (400, nothing written), and binds refused with the reason (Nova-style and standalone)."""

from __future__ import annotations

import uuid

import pytest
from cyborg_errors import cyborg_fault
from factories import add_device, add_profile, nova_bind_ops
from sqlmodel import select

from rayborg.api.app import ROUTES
from rayborg.api.app_keys import BINDER
from rayborg.api.openapi import build_document
from rayborg.store.queries import operator
from rayborg.store.tables import AttachHandle, Device

V = {"OpenStack-API-Version": "accelerator 2.3"}
MEMBER = {"X-Project-Id": "p1", "X-User-Id": "u1", "X-Roles": "member"}
NOVA = {**MEMBER, "X-Service-Roles": "service"}


async def device(client, uuid_: str, headers=V) -> dict:
    resp = await client.get(f"/v2/devices/{uuid_}", headers=headers)
    assert resp.status == 200
    return await resp.json()


def stored(store, uuid_: str) -> tuple[str, str | None]:
    dev = store.query(lambda s: s.exec(select(Device).where(Device.uuid == uuid_)).one())
    return dev.status, dev.status_reason


async def disable(client, uuid_: str, body=None, status: int = 200):
    resp = await client.post(f"/v2/devices/{uuid_}/disable", json=body) if body is not None else \
        await client.post(f"/v2/devices/{uuid_}/disable")
    assert resp.status == status, await resp.text()
    return resp


async def test_reason_is_shown_at_2_3_and_cleared_on_enable(client, store):
    tree, other = add_device(store, "host1"), add_device(store, "host2", bus=0x3b)
    resp = await disable(client, tree.device_uuid, {"reason": "fan failure"})
    assert await resp.read() == b""
    shown = await device(client, tree.device_uuid)
    assert (shown["status"], shown["status_reason"]) == ("maintaining", "fan failure")
    listed = {d["uuid"]: d for d in (await (await client.get("/v2/devices", headers=V)).json())["devices"]}
    assert (listed[tree.device_uuid]["status_reason"], listed[other.device_uuid]["status_reason"]) == (
        "fan failure", None)
    old = await device(client, tree.device_uuid, headers={"OpenStack-API-Version": "accelerator 2.2"})
    assert "status" not in old and "status_reason" not in old
    assert stored(store, tree.device_uuid) == ("maintaining", "fan failure")
    assert (await client.post(f"/v2/devices/{tree.device_uuid}/enable")).status == 200
    shown = await device(client, tree.device_uuid)
    assert (shown["status"], shown["status_reason"]) == ("enabled", None)
    assert stored(store, tree.device_uuid) == ("enabled", None)


async def test_no_body_still_disables_and_a_repeat_keeps_or_replaces_the_reason(client, store):
    tree = add_device(store, "host1")
    await disable(client, tree.device_uuid)  # as Cyborg's clients send it: no body at all
    assert stored(store, tree.device_uuid) == ("maintaining", None)
    await disable(client, tree.device_uuid, {"reason": "firmware update"})
    assert stored(store, tree.device_uuid) == ("maintaining", "firmware update")
    await disable(client, tree.device_uuid)  # a plain repeat does not wipe why
    await disable(client, tree.device_uuid, {})
    assert stored(store, tree.device_uuid) == ("maintaining", "firmware update")
    await disable(client, tree.device_uuid, {"reason": "fan failure"})
    assert (await device(client, tree.device_uuid))["status_reason"] == "fan failure"


@pytest.mark.parametrize("raw,content_type", [
    (b"not json", "application/json"), (b"[1]", "application/json"), (b"null", "application/json"),
    (b'"fan failure"', "application/json"), (b'{"reason": 5}', "application/json"),
    (b'{"reason": ""}', "application/json"), (b'{"reason": "' + b"x" * 256 + b'"}', "application/json"),
    (b'{"why": "fan"}', "application/json"), (b'{"reason": "a\\u0000b"}', "application/json"),
    (b'{"reason": ["fan"]}', "application/json"), (b'{"reason": "fan"}', "application/xml")])
async def test_bad_bodies_are_4xx_and_change_nothing(client, store, raw, content_type):
    tree = add_device(store, "host1")
    resp = await client.post(f"/v2/devices/{tree.device_uuid}/disable", data=raw,
                             headers={"Content-Type": content_type})
    await cyborg_fault(resp, 415 if content_type == "application/xml" else 400)
    assert stored(store, tree.device_uuid) == ("enabled", None)


async def test_unknown_device_with_a_reason_is_404(client, store):
    resp = await client.post(f"/v2/devices/{uuid.uuid4()}/disable", json={"reason": "fan failure"})
    assert "could not be found" in await cyborg_fault(resp, 404)


async def test_enable_ignores_a_body_and_member_cannot_disable(client, store):
    tree = add_device(store, "host1")
    resp = await client.post(f"/v2/devices/{tree.device_uuid}/disable", json={"reason": "x"}, headers=MEMBER)
    await cyborg_fault(resp, 403)
    assert stored(store, tree.device_uuid) == ("enabled", None)
    await disable(client, tree.device_uuid, {"reason": "fan failure"})
    assert (await client.post(f"/v2/devices/{tree.device_uuid}/enable", json={"reason": "x"})).status == 200
    assert stored(store, tree.device_uuid) == ("enabled", None)


def test_openapi_documents_the_optional_body_and_the_field():
    doc = build_document(ROUTES)
    body = doc["paths"]["/v2/devices/{uuid}/disable"]["post"]["requestBody"]
    assert body["required"] is False
    assert "status_reason" in doc["components"]["schemas"]["Device"]["properties"]


# -- binds ----------------------------------------------------------------------------------------

async def create(client, name: str) -> dict:
    resp = await client.post("/v2/accelerator_requests", json={"device_profile_name": name}, headers=MEMBER)
    assert resp.status == 201, await resp.text()
    (arq,) = (await resp.json())["arqs"]
    return arq


async def settled(client, arq_uuid: str) -> dict:
    await client.app[BINDER].drain()
    resp = await client.get(f"/v2/accelerator_requests/{arq_uuid}", headers=MEMBER)
    return await resp.json()


def handles_in_use(store) -> list[int]:
    return store.query(lambda s: list(s.exec(select(AttachHandle.id).where(AttachHandle.in_use.is_(True)))))


async def test_nova_bind_to_a_disabled_device_fails_naming_device_and_reason(client, store):
    add_profile(store, "dp", [{"resources:FPGA": "1"}])
    tree = add_device(store, "host1")
    await disable(client, tree.device_uuid, {"reason": "fan failure"})
    arq = await create(client, "dp")
    resp = await client.patch("/v2/accelerator_requests", headers=NOVA,
                              json={arq["uuid"]: nova_bind_ops("host1", tree.rp_uuids[0], str(uuid.uuid4()))})
    assert resp.status == 202, await resp.text()
    assert (await settled(client, arq["uuid"]))["state"] == "BindFailed"
    # Cyborg's ARQ answer has no error field: the reason is where operators read it (`rayborg arqs`)
    (failed,) = store.query(operator.arqs, "BindFailed")
    assert failed["bind_error"] == f"Device {tree.device_uuid} is disabled (fan failure)"
    assert handles_in_use(store) == []
    # enabled again, the same device binds
    assert (await client.post(f"/v2/devices/{tree.device_uuid}/enable")).status == 200
    again = await create(client, "dp")
    await client.patch("/v2/accelerator_requests", headers=NOVA,
                       json={again["uuid"]: nova_bind_ops("host1", tree.rp_uuids[0], str(uuid.uuid4()))})
    assert (await settled(client, again["uuid"]))["state"] == "Bound"


async def test_standalone_bind_skips_disabled_devices(client, store):
    add_profile(store, "dp", [{"resources:FPGA": "1"}])
    off = add_device(store, "host1")
    on = add_device(store, "host2", bus=0x3b)
    await disable(client, off.device_uuid, {"reason": "fan failure"})
    arq = await create(client, "dp")
    resp = await client.patch("/v2/accelerator_requests", headers=NOVA,
                              json={arq["uuid"]: [{"op": "add", "path": "/instance_uuid", "value": str(uuid.uuid4())}]})
    assert resp.status == 202, await resp.text()
    shown = await settled(client, arq["uuid"])
    assert (shown["state"], shown["device_rp_uuid"]) == ("Bound", on.rp_uuids[0])


async def test_standalone_bind_with_only_disabled_matches_is_409_naming_them(client, store):
    add_profile(store, "dp", [{"resources:FPGA": "1"}])
    first = add_device(store, "host1")
    second = add_device(store, "host2", bus=0x3b)
    add_device(store, "host3", type="GPU", rc="PGPU", traits=(), bus=0x3c)  # disabled, but does not match
    gpu = store.query(lambda s: s.exec(select(Device).where(Device.type == "GPU")).one().uuid)
    await disable(client, first.device_uuid, {"reason": "fan failure"})
    await disable(client, second.device_uuid)
    await disable(client, gpu, {"reason": "not an FPGA"})
    arq = await create(client, "dp")
    resp = await client.patch("/v2/accelerator_requests", headers=NOVA,
                              json={arq["uuid"]: [{"op": "add", "path": "/instance_uuid", "value": str(uuid.uuid4())}]})
    message = await cyborg_fault(resp, 409)
    assert f"device {first.device_uuid} (fan failure)" in message, message
    assert f"device {second.device_uuid} (no reason given)" in message
    assert gpu not in message and "not an FPGA" not in message
    shown = await settled(client, arq["uuid"])
    assert (shown["state"], shown["device_rp_uuid"], shown["instance_uuid"]) == ("Initial", None, None)

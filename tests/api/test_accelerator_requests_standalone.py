"""Standalone allocation through the REST API: a bind PATCH without /device_rp_uuid (and maybe
without /hostname) lets rayborg choose a free matching deployable, inside the bind's transaction."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from cyborg_errors import cyborg_fault
from factories import add_device, add_profile
from sqlalchemy import select, update

from rayborg.api.app_keys import BINDER
from rayborg.store import arq_state, bind_plan
from rayborg.store.tables import AttachHandle, Device, DeviceStatus, Host, HostState

MEMBER = {"X-Project-Id": "p1", "X-User-Id": "u1", "X-Roles": "member"}
NOVA = {**MEMBER, "X-Service-Roles": "service"}


async def create(client, name: str) -> list[dict]:
    resp = await client.post("/v2/accelerator_requests", json={"device_profile_name": name}, headers=MEMBER)
    assert resp.status == 201, await resp.text()
    return (await resp.json())["arqs"]


def ops(instance: str, hostname: str | None = None, rp: str | None = None) -> list[dict]:
    out = []
    if hostname is not None:
        out.append({"op": "add", "path": "/hostname", "value": hostname})
    if rp is not None:
        out.append({"op": "add", "path": "/device_rp_uuid", "value": rp})
    out.append({"op": "add", "path": "/instance_uuid", "value": instance})
    return out


async def patch(client, body, status=202, url="/v2/accelerator_requests"):
    resp = await client.patch(url, json=body, headers=NOVA)
    assert resp.status == status, await resp.text()
    return resp


async def show(client, arq_uuid) -> dict:
    resp = await client.get(f"/v2/accelerator_requests/{arq_uuid}", headers=MEMBER)
    assert resp.status == 200
    return await resp.json()


async def settle(client, arqs) -> list[dict]:
    await client.app[BINDER].drain()
    return [await show(client, a["uuid"]) for a in arqs]


def handles_in_use(store) -> set[int]:
    stmt = select(AttachHandle.id).where(AttachHandle.in_use.is_(True))
    return set(store.query(lambda s: list(s.scalars(stmt))))


def set_device_status(store, device_uuid: str, status: DeviceStatus) -> None:
    store.transact(lambda s: s.execute(update(Device).where(Device.uuid == device_uuid)
                                       .values(status=status.value)))


def unchanged(arq: dict) -> bool:
    return (arq["state"], arq["hostname"], arq["device_rp_uuid"], arq["instance_uuid"],
            arq["attach_handle_uuid"]) == ("Initial", None, None, None, None)


# -- choosing -------------------------------------------------------------------------------------

async def test_hostname_only_bind_picks_a_device_on_that_host(client, store):
    add_profile(store, "dp", [{"resources:FPGA": "1"}])
    add_device(store, "host1", handles_per_deployable=2)
    on2 = add_device(store, "host2", handles_per_deployable=2)
    (arq,) = await create(client, "dp")
    instance = str(uuid.uuid4())
    await patch(client, {arq["uuid"]: ops(instance, hostname="host2")})
    (shown,) = await settle(client, [arq])
    assert shown["state"] == "Bound", shown
    assert (shown["hostname"], shown["device_rp_uuid"], shown["instance_uuid"]) == \
        ("host2", on2.rp_uuids[0], instance)
    assert shown["attach_handle_uuid"] is not None
    assert len(handles_in_use(store) & set(on2.handle_ids)) == 1


async def test_bind_without_host_picks_any_matching_device(client, store):
    add_profile(store, "gpu", [{"resources:PGPU": "1"}])
    add_device(store, "host1", rc="FPGA", handles_per_deployable=3)
    gpu = add_device(store, "host2", type="GPU", rc="PGPU", traits=(), driver_name="nvidia_gpu",
                     handles_per_deployable=1)
    (arq,) = await create(client, "gpu")
    await patch(client, {arq["uuid"]: ops(str(uuid.uuid4()))})
    (shown,) = await settle(client, [arq])
    assert shown["state"] == "Bound"
    assert (shown["hostname"], shown["device_rp_uuid"]) == ("host2", gpu.rp_uuids[0])
    assert handles_in_use(store) == set(gpu.handle_ids)


async def test_single_uuid_form_with_hostname_only(client, store):
    add_profile(store, "dp", [{"resources:FPGA": "1"}])
    tree = add_device(store, "host1")
    (arq,) = await create(client, "dp")
    await patch(client, ops(str(uuid.uuid4()), hostname="host1"), url=f"/v2/accelerator_requests/{arq['uuid']}")
    (shown,) = await settle(client, [arq])
    assert shown["state"] == "Bound" and shown["device_rp_uuid"] == tree.rp_uuids[0]


async def test_required_and_forbidden_traits_are_respected(client, store):
    plain = add_device(store, "host1", traits=("CUSTOM_A",), bus=0x10)
    both = add_device(store, "host1", traits=("CUSTOM_A", "CUSTOM_B"), bus=0x20)
    add_profile(store, "not-b", [{"resources:FPGA": "1", "trait:CUSTOM_A": "required",
                                  "trait:CUSTOM_B": "forbidden"}])
    add_profile(store, "b", [{"resources:FPGA": "1", "trait:CUSTOM_B": "required"}])
    add_profile(store, "c", [{"resources:FPGA": "1", "trait:CUSTOM_C": "required"}])
    want_b = (await create(client, "b"))[0]
    not_b = (await create(client, "not-b"))[0]
    await patch(client, {want_b["uuid"]: ops(str(uuid.uuid4()), hostname="host1")})
    await patch(client, {not_b["uuid"]: ops(str(uuid.uuid4()))})
    shown_b, shown_not_b = await settle(client, [want_b, not_b])
    assert shown_b["state"] == shown_not_b["state"] == "Bound"
    assert shown_b["device_rp_uuid"] == both.rp_uuids[0]
    assert shown_not_b["device_rp_uuid"] == plain.rp_uuids[0]
    (want_c,) = await create(client, "c")
    resp = await patch(client, {want_c["uuid"]: ops(str(uuid.uuid4()))}, status=409)
    message = await cyborg_fault(resp, 409)
    assert want_c["uuid"] in message and "CUSTOM_C" in message and "FPGA" in message
    assert unchanged(await show(client, want_c["uuid"]))


async def test_no_free_device_is_409_and_changes_nothing(client, store):
    add_profile(store, "dp", [{"resources:FPGA": "1", "trait:CUSTOM_FPGA_INTEL": "required",
                               "trait:CUSTOM_SLOW": "forbidden"}])
    tree = add_device(store, "host1", handles_per_deployable=1)
    first, second = (await create(client, "dp"))[0], (await create(client, "dp"))[0]
    await patch(client, {first["uuid"]: ops(str(uuid.uuid4()), hostname="host1")})
    await settle(client, [first])
    for hostname in ("host1", None, "host9"):
        resp = await patch(client, {second["uuid"]: ops(str(uuid.uuid4()), hostname=hostname)}, status=409)
        message = await cyborg_fault(resp, 409)
        assert second["uuid"] in message and "resource class FPGA" in message
        assert "required traits CUSTOM_FPGA_INTEL" in message and "forbidden traits CUSTOM_SLOW" in message
        assert (f"on host {hostname}" if hostname else "on any host") in message
    (shown,) = await settle(client, [second])
    assert unchanged(shown)
    assert handles_in_use(store) == set(tree.handle_ids)


async def test_n_arqs_on_a_host_with_n_minus_one_free_handles(client, store):
    add_profile(store, "three", [{"resources:FPGA": "2"}, {"resources:FPGA": "1"}])
    tree = add_device(store, "host1", deployables=2, handles_per_deployable=1)
    add_device(store, "host2", handles_per_deployable=5)  # plenty, but on another host
    arqs = await create(client, "three")
    assert len(arqs) == 3
    instance = str(uuid.uuid4())
    resp = await patch(client, {a["uuid"]: ops(instance, hostname="host1") for a in arqs}, status=409)
    assert "on host host1" in await cyborg_fault(resp, 409)
    assert all(unchanged(a) for a in await settle(client, arqs))
    assert handles_in_use(store) == set()
    # Without the host they fit (first fit: host1's two handles, then host2); all distinct handles.
    await patch(client, {a["uuid"]: ops(instance) for a in arqs})
    shown = await settle(client, arqs)
    assert [a["state"] for a in shown] == ["Bound"] * 3
    assert len({a["attach_handle_uuid"] for a in shown}) == 3
    assert set(tree.handle_ids) <= handles_in_use(store)
    assert sorted(a["hostname"] for a in shown) == ["host1", "host1", "host2"]


async def test_arqs_of_one_request_share_a_deployable_up_to_its_free_handles(client, store):
    add_profile(store, "two", [{"resources:FPGA": "2"}])
    tree = add_device(store, "host1", handles_per_deployable=2)
    arqs = await create(client, "two")
    await patch(client, {a["uuid"]: ops(str(uuid.uuid4()), hostname="host1") for a in arqs})
    shown = await settle(client, arqs)
    assert [a["state"] for a in shown] == ["Bound", "Bound"]
    assert handles_in_use(store) == set(tree.handle_ids)


async def test_handles_promised_to_binds_in_flight_are_not_free(client, store):
    add_profile(store, "dp", [{"resources:FPGA": "1"}])
    tree = add_device(store, "host1", handles_per_deployable=1)
    nova_arq, mine = (await create(client, "dp"))[0], (await create(client, "dp"))[0]
    # A Nova bind in BindStarted whose binder has not claimed the handle yet.
    target = arq_state.BindTarget("host1", tree.rp_uuids[0], str(uuid.uuid4()), "p1")
    store.transact(arq_state.start_bind, {nova_arq["uuid"]: target})
    resp = await patch(client, {mine["uuid"]: ops(str(uuid.uuid4()))}, status=409)
    assert mine["uuid"] in await cyborg_fault(resp, 409)
    assert unchanged(await show(client, mine["uuid"]))
    # Same within one PATCH: an ARQ with a named RP speaks for that handle before the choice.
    store.transact(bind_plan.unbind_releasing, [nova_arq["uuid"]], None)
    body = {nova_arq["uuid"]: ops(str(uuid.uuid4()), "host1", tree.rp_uuids[0]),
            mine["uuid"]: ops(str(uuid.uuid4()))}
    await patch(client, body, status=409)
    assert unchanged(await show(client, mine["uuid"]))
    assert (await show(client, nova_arq["uuid"]))["state"] == "Unbound"


async def test_disabled_devices_and_lost_hosts_are_not_chosen(client, store):
    add_profile(store, "dp", [{"resources:FPGA": "1"}])
    disabled = add_device(store, "host1", handles_per_deployable=1, bus=0x10)
    enabled = add_device(store, "host1", handles_per_deployable=1, bus=0x20, model="PAC N3000")
    store.transact(lambda s: s.add(Host(hostname="host1", state=HostState.UP.value)))
    set_device_status(store, disabled.device_uuid, DeviceStatus.MAINTAINING)
    (arq,) = await create(client, "dp")
    await patch(client, {arq["uuid"]: ops(str(uuid.uuid4()), hostname="host1")})
    (shown,) = await settle(client, [arq])
    assert shown["state"] == "Bound" and shown["device_rp_uuid"] == enabled.rp_uuids[0]
    await patch(client, {arq["uuid"]: [{"op": "remove", "path": f"/{f}"}
                                      for f in ("hostname", "device_rp_uuid", "instance_uuid")]})
    store.transact(lambda s: s.execute(update(Host).where(Host.hostname == "host1")
                                       .values(state=HostState.LOST.value)))
    resp = await patch(client, {arq["uuid"]: ops(str(uuid.uuid4()))}, status=409)
    assert arq["uuid"] in await cyborg_fault(resp, 409)
    assert (await show(client, arq["uuid"]))["state"] == "Unbound"
    assert handles_in_use(store) == set()


@pytest.mark.parametrize("hostname", ["host1", None])
async def test_two_concurrent_standalone_binds_for_the_last_handle(client, store, hostname):
    add_profile(store, "dp", [{"resources:FPGA": "1"}])
    tree = add_device(store, "host1", handles_per_deployable=1)
    a, b = (await create(client, "dp"))[0], (await create(client, "dp"))[0]
    resps = await asyncio.gather(*(client.patch("/v2/accelerator_requests", headers=NOVA,
                                                json={x["uuid"]: ops(str(uuid.uuid4()), hostname=hostname)})
                                   for x in (a, b)))
    statuses = sorted(r.status for r in resps)
    assert statuses in ([202, 202], [202, 409]), [await r.text() for r in resps]
    shown = await settle(client, [a, b])
    states = sorted(x["state"] for x in shown)
    assert states.count("Bound") == 1, shown
    assert states in (["Bound", "Initial"], ["BindFailed", "Bound"])
    assert handles_in_use(store) == set(tree.handle_ids)
    if statuses == [202, 409]:  # the loser changed nothing
        assert any(unchanged(x) for x in shown)


# -- Cyborg compatibility -------------------------------------------------------------------------

async def test_an_rp_without_host_or_no_instance_is_still_400(client, store):
    add_profile(store, "dp", [{"resources:FPGA": "1"}])
    tree = add_device(store, "host1")
    (arq,) = await create(client, "dp")
    resp = await patch(client, {arq["uuid"]: ops(str(uuid.uuid4()), rp=tree.rp_uuids[0])}, status=400)
    assert await cyborg_fault(resp, 400) == "Fields absent in patch hostname"
    host_only = [{"op": "add", "path": "/hostname", "value": "host1"}]
    resp = await patch(client, {arq["uuid"]: host_only}, status=400)
    assert await cyborg_fault(resp, 400) == "Fields absent in patch device_rp_uuid, instance_uuid"
    resp = await patch(client, {arq["uuid"]: host_only + [
        {"op": "add", "path": "/device_rp_uuid", "value": tree.rp_uuids[0]}]}, status=400)
    assert await cyborg_fault(resp, 400) == "Fields absent in patch instance_uuid"
    assert unchanged(await show(client, arq["uuid"]))


async def test_full_bind_still_goes_where_nova_says(client, store):
    add_profile(store, "dp", [{"resources:FPGA": "1"}])
    add_device(store, "host1")
    nova_pick = add_device(store, "host2")
    (arq,) = await create(client, "dp")
    await patch(client, {arq["uuid"]: ops(str(uuid.uuid4()), "host2", nova_pick.rp_uuids[0])})
    (shown,) = await settle(client, [arq])
    assert shown["state"] == "Bound" and shown["hostname"] == "host2"
    assert shown["device_rp_uuid"] == nova_pick.rp_uuids[0]


async def test_openapi_describes_the_optional_fields(client):
    resp = await client.get("/v2/openapi.json")
    text = json.dumps(await resp.json())
    assert "Standalone allocation without Nova" in text and "/device_rp_uuid are optional" in text

"""/v2/accelerator_requests: create, list/show with project isolation, bind/unbind PATCH (both forms)
through the local binder, delete forms, the service-token gate and every bad-input class."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from sqlalchemy import select

from cyborg_errors import cyborg_fault
from factories import add_device, add_profile, nova_bind_ops
from rayborg.api.app_keys import BINDER
from rayborg.store.tables import AttachHandle

V = "OpenStack-API-Version"
MEMBER = {"X-Project-Id": "p1", "X-User-Id": "u1", "X-Roles": "member"}
NOVA = {**MEMBER, "X-Service-Roles": "service"}  # a user token plus Nova's service token
OTHER = {"X-Project-Id": "p2", "X-User-Id": "u2", "X-Roles": "member"}
ADMIN_NOVA = {"X-Project-Id": "p0", "X-Roles": "admin", "X-Service-Roles": "service"}
SERVICE_TOKEN_MSG = ("This operation requires a service token. Use the Compute API to manage instance "
                     "accelerators.")
JSON = {"Content-Type": "application/json"}
ARQ_FIELDS = {"uuid", "state", "device_profile_name", "device_profile_group_id", "hostname", "device_rp_uuid",
              "instance_uuid", "project_id", "attach_handle_type", "attach_handle_uuid", "attach_handle_info",
              "created_at", "updated_at", "links"}


@pytest.fixture
def tree(store):
    add_profile(store, "dp", [{"resources:FPGA": "1"}])
    add_profile(store, "dp2", [{"resources:FPGA": "2"}, {"resources:FPGA": "1"}])
    return add_device(store, handles_per_deployable=2)


async def create(client, name="dp", headers=MEMBER) -> list[dict]:
    resp = await client.post("/v2/accelerator_requests", json={"device_profile_name": name}, headers=headers)
    assert resp.status == 201, await resp.text()
    return (await resp.json())["arqs"]


def bind_ops(tree, instance: str, hostname: str = "host1") -> list[dict]:
    return nova_bind_ops(hostname, tree.rp_uuids[0], instance)


UNBIND_OPS = [{"op": "remove", "path": p} for p in ("/hostname", "/device_rp_uuid", "/instance_uuid")]


async def patch(client, body, status=202, headers=NOVA, url="/v2/accelerator_requests"):
    resp = await client.patch(url, json=body, headers=headers)
    assert resp.status == status, await resp.text()
    return resp


async def show(client, arq_uuid, headers=MEMBER) -> dict:
    resp = await client.get(f"/v2/accelerator_requests/{arq_uuid}", headers=headers)
    assert resp.status == 200
    return await resp.json()


async def listed(client, query="", headers=MEMBER) -> list[dict]:
    resp = await client.get(f"/v2/accelerator_requests{query}", headers=headers)
    assert resp.status == 200, await resp.text()
    return (await resp.json())["arqs"]


def handles_in_use(store) -> set[int]:
    in_use = select(AttachHandle.id).where(AttachHandle.in_use.is_(True))
    return set(store.query(lambda s: list(s.scalars(in_use))))


# -- create ---------------------------------------------------------------------------------------

async def test_create_returns_initial_arqs_of_every_group(client, tree):
    arqs = await create(client, "dp2")
    assert [a["device_profile_group_id"] for a in arqs] == [0, 0, 1]
    arq = arqs[0]
    assert set(arq) == ARQ_FIELDS
    assert arq["state"] == "Initial" and arq["device_profile_name"] == "dp2" and arq["project_id"] == "p1"
    assert (arq["hostname"], arq["device_rp_uuid"], arq["instance_uuid"]) == (None, None, None)
    assert (arq["attach_handle_type"], arq["attach_handle_uuid"], arq["attach_handle_info"]) == ("", None, {})
    assert arq["updated_at"] is None and arq["created_at"].endswith("+00:00")
    assert arq["links"] == [{"href": str(client.make_url(f"/v2/accelerator_requests/{arq['uuid']}")),
                             "rel": "self"}]
    assert await show(client, arq["uuid"]) == arq


@pytest.mark.parametrize("extra", [{"device_profile_group_id": None}, {"device_profile_group_id": 0},
                                   {"image_uuid": str(uuid.uuid4())}])
async def test_create_accepts_and_ignores_client_extras(client, tree, extra):
    resp = await client.post("/v2/accelerator_requests", json={"device_profile_name": "dp2", **extra})
    assert resp.status == 201 and len((await resp.json())["arqs"]) == 3


# An empty name is looked up and not found (404, as in Cyborg): test_input_limits.py.
@pytest.mark.parametrize("body", [{}, {"device_profile_name": 5}, ["dp"], "dp",
                                  {"device_profile_name": "dp", "x": 1},
                                  {"device_profile_name": "dp", "device_profile_group_id": "first"}])
async def test_create_rejects_bad_bodies(client, tree, body):
    resp = await client.post("/v2/accelerator_requests", json=body)
    await cyborg_fault(resp, 400)
    assert await listed(client, headers={}) == []


async def test_create_bad_transport_and_unknown_profile(client, tree):
    resp = await client.post("/v2/accelerator_requests", data=b"{", headers=JSON)
    assert resp.status == 400
    resp = await client.post("/v2/accelerator_requests", data=b"<arq/>", headers={"Content-Type": "text/xml"})
    assert resp.status == 415
    big = json.dumps({"device_profile_name": "x" * (2 * 1024 * 1024)})
    resp = await client.post("/v2/accelerator_requests", data=big, headers=JSON)
    assert resp.status == 413
    resp = await client.post("/v2/accelerator_requests", json={"device_profile_name": "nope"})
    assert "nope" in await cyborg_fault(resp, 404)
    resp = await client.post("/v2/accelerator_requests", json={"device_profile_name": "dp"},
                             headers={V: "accelerator 2.4"})
    assert resp.status == 406


# -- list / show ----------------------------------------------------------------------------------

async def test_projects_are_isolated_and_admins_see_all(client, tree):
    mine = await create(client, headers=MEMBER)
    theirs = await create(client, headers=OTHER)
    assert [a["uuid"] for a in await listed(client, headers=MEMBER)] == [mine[0]["uuid"]]
    assert [a["uuid"] for a in await listed(client, headers=OTHER)] == [theirs[0]["uuid"]]
    assert len(await listed(client, headers={"X-Project-Id": "p9", "X-Roles": "admin"})) == 2
    resp = await client.get(f"/v2/accelerator_requests/{theirs[0]['uuid']}", headers=MEMBER)
    assert resp.status == 404
    resp = await client.delete(f"/v2/accelerator_requests?arqs={theirs[0]['uuid']}", headers=MEMBER)
    assert resp.status == 404
    await patch(client, {theirs[0]["uuid"]: bind_ops(tree, str(uuid.uuid4()))}, status=404)
    assert len(await listed(client, headers=OTHER)) == 1


@pytest.mark.parametrize("url,status", [
    ("/v2/accelerator_requests/not-a-uuid", 400), ("/v2/accelerator_requests/4cd3925c-04dd-4618-a0ab-c861f6c06803", 404),
    ("/v2/accelerator_requests?instance=nope", 400), ("/v2/accelerator_requests?bind_state=bound", 400),
    ("/v2/accelerator_requests?state=Bound", 400)])
async def test_list_and_show_bad_input(client, tree, url, status):
    resp = await client.get(url)
    await cyborg_fault(resp, status)


async def test_list_by_instance_and_resolved(client, store, tree):
    a, b = (await create(client, headers=MEMBER))[0], (await create(client, headers=MEMBER))[0]
    instance = str(uuid.uuid4())
    await patch(client, {a["uuid"]: bind_ops(tree, instance)})
    await client.app[BINDER].drain()
    assert [x["uuid"] for x in await listed(client, f"?instance={instance}")] == [a["uuid"]]
    resolved = await listed(client, f"?instance={instance}&bind_state=resolved")
    assert [x["uuid"] for x in resolved] == [a["uuid"]]
    assert [x["uuid"] for x in await listed(client, "?bind_state=resolved")] == [a["uuid"]]
    assert await listed(client, f"?instance={uuid.uuid4()}") == []
    # an instance with an ARQ still binding: 423 for the resolved list
    other = str(uuid.uuid4())
    from rayborg.store import arq_state

    store.transact(arq_state.start_bind, {b["uuid"]: arq_state.BindTarget("host1", tree.rp_uuids[0], other)})
    resp = await client.get(f"/v2/accelerator_requests?instance={other}&bind_state=resolved", headers=MEMBER)
    assert resp.status == 423
    assert len(await listed(client, f"?instance={other}")) == 1


# -- bind / unbind --------------------------------------------------------------------------------

async def test_nova_bind_then_unbind(client, store, tree):
    (arq,) = await create(client)
    instance = str(uuid.uuid4())
    resp = await patch(client, {arq["uuid"]: bind_ops(tree, instance)})
    assert await resp.read() == b""
    await client.app[BINDER].drain()
    bound = await show(client, arq["uuid"])
    assert bound["state"] == "Bound" and bound["instance_uuid"] == instance and bound["hostname"] == "host1"
    assert bound["device_rp_uuid"] == tree.rp_uuids[0] and bound["project_id"] == "p1"
    assert bound["attach_handle_type"] == "PCI" and uuid.UUID(bound["attach_handle_uuid"])
    assert bound["attach_handle_info"] == {"bus": "5e", "device": "00", "domain": "0000", "function": "0"}
    assert bound["updated_at"] is not None
    assert handles_in_use(store) == {tree.handle_ids[0]}

    await patch(client, {arq["uuid"]: UNBIND_OPS})
    unbound = await show(client, arq["uuid"])
    assert unbound["state"] == "Unbound" and unbound["instance_uuid"] is None
    assert unbound["attach_handle_type"] == "" and unbound["attach_handle_info"] == {}
    assert handles_in_use(store) == set()


async def test_bind_failure_is_reported_as_bind_failed(client, tree):
    (arq,) = await create(client)
    await patch(client, {arq["uuid"]: bind_ops(tree, str(uuid.uuid4()), hostname="elsewhere")})
    await client.app[BINDER].drain()
    assert (await show(client, arq["uuid"]))["state"] == "BindFailed"


async def test_sdk_single_uuid_patch_forms(client, tree):
    a, b = (await create(client))[0], (await create(client))[0]
    await patch(client, {a["uuid"]: bind_ops(tree, str(uuid.uuid4()))},
                url=f"/v2/accelerator_requests/{a['uuid']}")
    await patch(client, bind_ops(tree, str(uuid.uuid4())), url=f"/v2/accelerator_requests/{b['uuid']}")
    await client.app[BINDER].drain()
    assert [(await show(client, x["uuid"]))["state"] for x in (a, b)] == ["Bound", "Bound"]
    resp = await patch(client, {a["uuid"]: UNBIND_OPS}, status=400,
                       url=f"/v2/accelerator_requests/{b['uuid']}")
    assert "in the path" in await cyborg_fault(resp, 400)
    await patch(client, {a["uuid"]: UNBIND_OPS}, status=400, url="/v2/accelerator_requests/not-a-uuid")


async def test_bind_and_unbind_need_a_service_token(client, tree):
    (arq,) = await create(client)
    for ops in (bind_ops(tree, str(uuid.uuid4())), UNBIND_OPS):
        resp = await patch(client, {arq["uuid"]: ops}, status=403, headers=MEMBER)
        assert await cyborg_fault(resp, 403) == SERVICE_TOKEN_MSG
    assert (await show(client, arq["uuid"]))["state"] == "Initial"


def _ops_with(tree, instance, **change):
    ops = bind_ops(tree, instance)
    for op in ops:
        if op["path"][1:] in change:
            op["value"] = change[op["path"][1:]]
    return ops


@pytest.mark.parametrize("make_body,needle", [
    (lambda u, t, i: [{"op": "add", "path": "/hostname", "value": "h"}], "object"),
    (lambda u, t, i: {}, "object"),
    (lambda u, t, i: {"not-a-uuid": bind_ops(t, i)}, "uuid"),
    (lambda u, t, i: {u: {"op": "add"}}, "list"),
    (lambda u, t, i: {u: []}, "list"),
    (lambda u, t, i: {u: ["add"]}, "list"),
    (lambda u, t, i: {u: [{"path": "/hostname", "value": "h"}]}, "Invalid JSON-Patch"),
    (lambda u, t, i: {u: [{"op": "frobnicate", "path": "/hostname"}]}, "Invalid JSON-Patch"),
    (lambda u, t, i: {u: [{"op": "add", "path": "hostname", "value": "h"}]}, "Invalid JSON-Patch"),
    (lambda u, t, i: {u: [{"op": "add", "path": 7, "value": "h"}]}, "Invalid JSON-Patch"),
    (lambda u, t, i: {u: [{"op": "add", "path": "/hostname~9", "value": "h"}]}, "Invalid JSON-Patch"),
    (lambda u, t, i: {u: [*bind_ops(t, i), {"op": "replace", "path": "/state", "value": "Bound"}]},
     "Every op must be add or remove"),
    (lambda u, t, i: {u: [*bind_ops(t, i), {"op": "remove", "path": "/hostname"}]},
     "Every op must be add or remove"),
    (lambda u, t, i: {u: [*bind_ops(t, i), {"op": "add", "path": "/state", "value": "Bound"}]},
     "Invalid path in patch /state"),
    (lambda u, t, i: {u: [*bind_ops(t, i), {"op": "add", "path": "/hostname", "value": "x"}]}, "twice"),
    (lambda u, t, i: {u: bind_ops(t, i)[:2]}, "Fields absent in patch instance_uuid"),
    (lambda u, t, i: {u: [{"op": "add", "path": "/hostname"}, *bind_ops(t, i)[1:]]}, "no value"),
    (lambda u, t, i: {u: _ops_with(t, i, device_rp_uuid="rp-1")}, "device_rp_uuid"),
    (lambda u, t, i: {u: _ops_with(t, i, instance_uuid=5)}, "instance_uuid"),
    (lambda u, t, i: {u: _ops_with(t, i, hostname="")}, "hostname"),
    (lambda u, t, i: {u: bind_ops(t, i), str(uuid.uuid4()): UNBIND_OPS}, "not both"),
])
async def test_bad_patches_are_400_and_change_nothing(client, tree, make_body, needle):
    (arq,) = await create(client)
    resp = await patch(client, make_body(arq["uuid"], tree, str(uuid.uuid4())), status=400)
    assert needle in await cyborg_fault(resp, 400)
    assert (await show(client, arq["uuid"]))["state"] == "Initial"


async def test_bad_patch_transport(client, tree):
    resp = await client.patch("/v2/accelerator_requests", data=b"{", headers={**NOVA, **JSON})
    assert resp.status == 400
    resp = await client.patch("/v2/accelerator_requests", data=b"x",
                              headers={**NOVA, "Content-Type": "text/html"})
    assert resp.status == 415
    resp = await client.patch("/v2/accelerator_requests", json={}, headers={**NOVA, V: "accelerator 3.0"})
    assert resp.status == 406


async def test_patch_with_one_unknown_arq_changes_nothing(client, tree):
    (arq,) = await create(client)
    ghost = str(uuid.uuid4())
    resp = await patch(client, {arq["uuid"]: bind_ops(tree, str(uuid.uuid4())),
                                ghost: bind_ops(tree, str(uuid.uuid4()))}, status=404)
    assert ghost in await cyborg_fault(resp, 404)
    await client.app[BINDER].drain()
    assert (await show(client, arq["uuid"]))["state"] == "Initial"


async def test_wrong_state_and_busy_instance(client, tree):
    a, b = (await create(client))[0], (await create(client))[0]
    instance = str(uuid.uuid4())
    await patch(client, {a["uuid"]: bind_ops(tree, instance)})
    await client.app[BINDER].drain()
    resp = await patch(client, {a["uuid"]: bind_ops(tree, str(uuid.uuid4()))}, status=409)  # already Bound
    assert "Bound" in await cyborg_fault(resp, 409)
    resp = await patch(client, {b["uuid"]: bind_ops(tree, instance)}, status=400)
    assert "already has accelerator requests" in await cyborg_fault(resp, 400)
    await patch(client, {a["uuid"]: UNBIND_OPS})
    await patch(client, {a["uuid"]: UNBIND_OPS}, status=409)  # Unbound -> Unbound is no transition
    assert (await show(client, b["uuid"]))["state"] == "Initial"


async def test_project_id_in_bind_needs_2_1_and_admin(client, tree):
    (arq,) = await create(client, headers=ADMIN_NOVA)
    ops = [*bind_ops(tree, str(uuid.uuid4())), {"op": "add", "path": "/project_id", "value": "p7"}]
    resp = await patch(client, {arq["uuid"]: ops}, status=406, headers=ADMIN_NOVA)
    assert "2.1" in await cyborg_fault(resp, 406)
    await patch(client, {arq["uuid"]: ops}, status=403, headers={**NOVA, V: "accelerator 2.1"})
    await patch(client, {arq["uuid"]: ops}, headers={**ADMIN_NOVA, V: "accelerator 2.1"})
    await client.app[BINDER].drain()
    shown = await show(client, arq["uuid"], headers=ADMIN_NOVA)
    assert shown["project_id"] == "p7" and shown["state"] == "Bound"


# -- delete ---------------------------------------------------------------------------------------

async def test_delete_by_arqs_is_not_idempotent(client, store, tree):
    a, b, c = await create(client, "dp2")
    await patch(client, {a["uuid"]: bind_ops(tree, str(uuid.uuid4()))})
    await client.app[BINDER].drain()
    assert len(handles_in_use(store)) == 1
    resp = await client.delete(f"/v2/accelerator_requests?arqs={a['uuid']},{b['uuid']}", headers=NOVA)
    assert resp.status == 204 and await resp.read() == b""
    assert handles_in_use(store) == set()
    resp = await client.delete(f"/v2/accelerator_requests?arqs={b['uuid']},{c['uuid']}", headers=NOVA)
    assert b["uuid"] in await cyborg_fault(resp, 404)
    assert await listed(client) == []  # c was deleted before the 404


async def test_delete_single_uuid_form(client, tree):
    (arq,) = await create(client)
    resp = await client.delete(f"/v2/accelerator_requests/{arq['uuid']}", headers=MEMBER)
    assert resp.status == 204
    resp = await client.delete(f"/v2/accelerator_requests/{arq['uuid']}", headers=MEMBER)
    assert resp.status == 404
    resp = await client.delete("/v2/accelerator_requests/nope", headers=MEMBER)
    assert resp.status == 400


async def test_delete_by_instance_is_idempotent_and_needs_service(client, store, tree):
    arqs = await create(client, "dp2")
    instance = str(uuid.uuid4())
    await patch(client, {a["uuid"]: bind_ops(tree, instance) for a in arqs[:2]})
    await client.app[BINDER].drain()
    resp = await client.delete(f"/v2/accelerator_requests?instance={instance}", headers=MEMBER)
    assert await cyborg_fault(resp, 403) == SERVICE_TOKEN_MSG
    for _ in range(2):
        resp = await client.delete(f"/v2/accelerator_requests?instance={instance}", headers=NOVA)
        assert resp.status == 204
    assert [a["uuid"] for a in await listed(client)] == [arqs[2]["uuid"]]
    assert handles_in_use(store) == set()


async def test_deleting_a_bound_arq_needs_service(client, tree):
    a, b = (await create(client))[0], (await create(client))[0]
    instance = str(uuid.uuid4())
    await patch(client, {a["uuid"]: bind_ops(tree, instance)})
    await client.app[BINDER].drain()
    resp = await client.delete(f"/v2/accelerator_requests?arqs={b['uuid']},{a['uuid']}", headers=MEMBER)
    message = await cyborg_fault(resp, 403)
    assert a["uuid"] in message and instance in message
    assert len(await listed(client)) == 2  # nothing deleted
    resp = await client.delete(f"/v2/accelerator_requests?arqs={b['uuid']}", headers=MEMBER)
    assert resp.status == 204  # an unbound ARQ needs no service token


@pytest.mark.parametrize("query", ["", "?arqs=b4f637b1-44c8-4dba-a3dd-bfa53c48f2b8&instance=4c56e0fa-4750-4742-9309-bc84a45bd6d7", "?arqs=",
                                   "?arqs=nope", "?instance=nope", "?what=1"])
async def test_delete_bad_queries(client, tree, query):
    await create(client)
    resp = await client.delete(f"/v2/accelerator_requests{query}")
    await cyborg_fault(resp, 400)
    assert len(await listed(client)) == 1


# -- concurrency ----------------------------------------------------------------------------------

async def test_fifty_concurrent_bind_patches_on_five_handles(client, store):
    add_profile(store, "many", [{"resources:FPGA": "50"}])
    tree = add_device(store, handles_per_deployable=5)
    arqs = await create(client, "many")
    assert len(arqs) == 50
    resps = await asyncio.gather(*(client.patch("/v2/accelerator_requests", headers=NOVA,
                                                json={a["uuid"]: bind_ops(tree, str(uuid.uuid4()))})
                                   for a in arqs))
    assert [r.status for r in resps] == [202] * 50
    await client.app[BINDER].drain()
    shown = await listed(client)
    states = [a["state"] for a in shown]
    assert states.count("Bound") == 5 and states.count("BindFailed") == 45
    handle_uuids = [a["attach_handle_uuid"] for a in shown if a["state"] == "Bound"]
    assert len(set(handle_uuids)) == 5
    assert handles_in_use(store) == set(tree.handle_ids)


# -- what the binder is told to release ------------------------------------------------------------

class RecordingBinder:
    """The local binder, remembering every `released()` call (what would leave hosts and Placement)."""

    def __init__(self, store):
        from rayborg.api.local_binder import LocalBinder

        self.inner = LocalBinder(store)
        self.held = []
        self.submit, self.drain, self.close = self.inner.submit, self.inner.drain, self.inner.close

    async def released(self, held) -> None:
        self.held.append(held)
        await self.inner.released(held)


@pytest.fixture
async def recording(aiohttp_client, settings, store):
    from rayborg.api.app import create_app

    binder = RecordingBinder(store)
    return await aiohttp_client(create_app(settings, store, binder=binder)), binder


async def test_another_projects_unbind_and_delete_release_nothing_of_the_owner(recording, store):
    """Nova with a service token, but for project p2: p1's standalone-bound vGPU ARQ is not its to
    release. It gets 404 (or 204 for the idempotent ?instance=) and the binder must not be told to
    remove p1's mdev or give back p1's Placement allocation."""
    client, binder = recording
    add_profile(store, "vgpu", [{"resources:VGPU": "1"}])
    add_device(store, type="GPU", rc="VGPU", traits=(), attach_type="MDEV", driver_name="nvidia_vgpu")
    (arq,) = await create(client, "vgpu")
    instance = str(uuid.uuid4())
    await patch(client, {arq["uuid"]: [{"op": "add", "path": "/hostname", "value": "host1"},
                                       {"op": "add", "path": "/instance_uuid", "value": instance}]})
    await binder.drain()
    assert (await show(client, arq["uuid"]))["state"] == "Bound"

    other_nova = {**OTHER, "X-Service-Roles": "service"}
    await patch(client, {arq["uuid"]: UNBIND_OPS}, status=404, headers=other_nova)
    resp = await client.delete(f"/v2/accelerator_requests?instance={instance}", headers=other_nova)
    assert resp.status == 204
    for url in (f"/v2/accelerator_requests?arqs={arq['uuid']}", f"/v2/accelerator_requests/{arq['uuid']}"):
        resp = await client.delete(url, headers=other_nova)
        assert arq["uuid"] in await cyborg_fault(resp, 404)
    assert (await show(client, arq["uuid"]))["state"] == "Bound"
    assert [h for h in binder.held if h.handles or h.consumers] == []

    # The owner's own unbind does hand its mdev and consumer over (the recorder sees releases).
    await patch(client, {arq["uuid"]: UNBIND_OPS})
    (held,) = [h for h in binder.held if h.handles or h.consumers]
    assert [h.hostname for h in held.handles] == ["host1"] and held.consumers == [instance]

"""Keystone mode's quota limits from Keystone's unified limits (oslo.limit), against the real
Keystone: an `accelerator` service and endpoint with a registered limit `class:FPGA` = 2 and a
project limit of 1 for one project. That project's second FPGA bind is refused (403 naming the
resource, limit and usage); another project falls back to the registered default (2), and the
limits are read from Keystone once per project while cached."""

from __future__ import annotations

import json
import uuid

from factories import add_device, add_profile
from servers import MEMBER, NOVA, User

OTHER = User("rayborg-quota-other", "rayborg-quota-other-project")


def _one(admin, url: str, collection: str, params: dict, body: dict) -> dict:
    """The first `collection` item matching `params`, created with `body` when there is none
    (Keystone is shared by the session's tests)."""
    found = admin.get(f"{url}/{collection}", params=params).json()[collection]
    if found:
        return found[0]
    many = collection.endswith("limits")  # limits are created in lists
    key = collection if many else collection[:-1]
    resp = admin.post(f"{url}/{collection}", json={key: [body] if many else body})
    assert resp.status_code in (200, 201), resp.text
    return resp.json()[key][0] if many else resp.json()[key]


def unified_limits(keystone) -> str:
    """The accelerator endpoint's id, with class:FPGA registered at 2 and MEMBER's project at 1."""
    admin, url = keystone.session(), keystone.url
    service = _one(admin, url, "services", {"type": "accelerator"}, {"type": "accelerator", "name": "cyborg"})
    endpoint = _one(admin, url, "endpoints", {"service_id": service["id"], "interface": "public"},
                    {"service_id": service["id"], "interface": "public", "region_id": "RegionOne",
                     "url": "http://127.0.0.1:6666/accelerator"})
    where = {"service_id": service["id"], "region_id": "RegionOne", "resource_name": "class:FPGA"}
    registered = _one(admin, url, "registered_limits", where, {**where, "default_limit": 2})
    if registered["default_limit"] != 2:
        admin.patch(f"{url}/registered_limits/{registered['id']}",
                    json={"registered_limit": {"default_limit": 2}})
    project = admin.get(f"{url}/projects", params={"name": MEMBER.project}).json()["projects"][0]["id"]
    limit = _one(admin, url, "limits", {**where, "project_id": project}, {**where, "project_id": project,
                                                                          "resource_limit": 1})
    if limit["resource_limit"] != 1:
        admin.patch(f"{url}/limits/{limit['id']}", json={"limit": {"resource_limit": 1}})
    return endpoint["id"]


async def test_project_limit_overrides_the_registered_default(keystone, ks_app_factory, sqlite_store):
    from rayborg.api import quota_limits

    keystone.ensure_member_user()
    keystone.ensure_persona(OTHER, "member")
    endpoint_id = unified_limits(keystone)
    options = {"enabled": True, "endpoint_id": endpoint_id, "cache_seconds": 60}
    client, app = await ks_app_factory(keystone.url, unified_limits=options)
    tree = add_device(sqlite_store, handles_per_deployable=8)
    add_profile(sqlite_store, "dp", [{"resources:FPGA": "1"}])
    nova = keystone.token(NOVA)

    async def bind(user: User) -> tuple[int, str]:
        headers = {"X-Auth-Token": keystone.token(user)}
        resp = await client.post("/v2/accelerator_requests", json={"device_profile_name": "dp"},
                                 headers=headers)
        assert resp.status == 201, await resp.text()
        arq = (await resp.json())["arqs"][0]["uuid"]
        ops = [{"op": "add", "path": "/hostname", "value": "host1"},
               {"op": "add", "path": "/device_rp_uuid", "value": tree.rp_uuids[0]},
               {"op": "add", "path": "/instance_uuid", "value": str(uuid.uuid4())}]
        resp = await client.patch("/v2/accelerator_requests", json={arq: ops},
                                  headers={**headers, "X-Service-Token": nova})
        if resp.status != 403:
            return resp.status, ""
        return resp.status, json.loads((await resp.json())["error_message"])["faultstring"]

    assert (await bind(MEMBER))[0] == 202
    status, refused = await bind(MEMBER)  # the project limit (1), not the registered default (2)
    assert status == 403 and "FPGA" in refused and "limit 1" in refused and "usage 1" in refused
    assert [(await bind(OTHER))[0] for _ in range(3)] == [202, 202, 403]  # the registered default: 2
    source = quota_limits._by_app[app]
    assert source.reads == 2  # once per project while cached, not once per bind
    resp = await client.get("/v2/quotas/usage", headers={"X-Auth-Token": keystone.token(OTHER)})
    assert resp.status == 200, await resp.text()
    (usage,) = (await resp.json())["quota_usages"]
    assert usage["resource"] == "FPGA" and usage["limit"] == 2 and usage["used"] + usage["reserved"] == 2

"""Keystone auth against a real Keystone: 401s, roles and policy from real tokens, the service-token
gate on binds, project and system scope (not unscoped), and the token cache."""

from __future__ import annotations

import json
import uuid

import pytest
from factories import add_device, add_profile
from servers import ADMIN, MEMBER, NOVA
from rayborg.api.app_keys import AUTH, BINDER

# The first test also installs and starts Keystone (session fixture): allow for a slow package index.
pytestmark = [pytest.mark.xdist_group("keystone"), pytest.mark.slow, pytest.mark.timeout(900)]

PROFILE = [{"name": "ks-dp", "groups": [{"resources:FPGA": "1"}]}]


async def fault(resp) -> str:
    return json.loads((await resp.json())["error_message"])["faultstring"]


@pytest.fixture(scope="module")
def tokens(keystone) -> dict[str, str]:
    return {"admin": keystone.token(ADMIN), "member": keystone.token(MEMBER), "nova": keystone.token(NOVA)}


@pytest.fixture
async def ks(keystone, ks_app_factory):
    client, app = await ks_app_factory(keystone.url)
    return client, app


async def test_no_token_and_bad_token_are_401_with_keystone_uri(ks, keystone):
    client, _ = ks
    for headers in ({}, {"X-Auth-Token": "not-a-token"}, {"X-Auth-Token": uuid.uuid4().hex}):
        resp = await client.get("/v2/device_profiles", headers=headers)
        assert resp.status == 401, headers
        assert resp.headers["WWW-Authenticate"] == f'Keystone uri="{keystone.url}"'
        inner = json.loads((await resp.json())["error_message"])
        assert inner["faultcode"] == "Client" and "token" in inner["faultstring"].lower()
    # Identity headers are not trusted in keystone mode.
    resp = await client.get("/v2/device_profiles", headers={"X-Roles": "admin", "X-Project-Id": "p"})
    assert resp.status == 401
    # Version discovery and the OpenAPI document need no token.
    for path in ("/", "/v2", "/v2/openapi.json"):
        assert (await client.get(path)).status == 200


async def test_member_reads_profiles_but_cannot_create_admin_can(ks, tokens):
    client, _ = ks
    member = {"X-Auth-Token": tokens["member"]}
    resp = await client.get("/v2/device_profiles", headers=member)
    assert resp.status == 200, await resp.text()
    resp = await client.post("/v2/device_profiles", json=PROFILE, headers=member)
    assert resp.status == 403
    assert await fault(resp) == "Access was denied to the following resource: cyborg:device_profile:create"
    resp = await client.post("/v2/device_profiles", json=PROFILE, headers={"X-Auth-Token": tokens["admin"]})
    assert resp.status == 201, await resp.text()
    resp = await client.get("/v2/devices", headers=member)
    assert resp.status == 403
    assert "cyborg:device:get_all" in await fault(resp)


async def test_bind_needs_nova_service_token(ks, tokens, sqlite_store):
    client, app = ks
    tree = add_device(sqlite_store)
    add_profile(sqlite_store, "dp", [{"resources:FPGA": "1"}])
    member = {"X-Auth-Token": tokens["member"]}
    resp = await client.post("/v2/accelerator_requests", json={"device_profile_name": "dp"}, headers=member)
    assert resp.status == 201, await resp.text()
    arq = (await resp.json())["arqs"][0]
    ops = [{"op": "add", "path": "/hostname", "value": "host1"},
           {"op": "add", "path": "/device_rp_uuid", "value": tree.rp_uuids[0]},
           {"op": "add", "path": "/instance_uuid", "value": str(uuid.uuid4())}]
    resp = await client.patch("/v2/accelerator_requests", json={arq["uuid"]: ops}, headers=member)
    assert resp.status == 403
    assert "requires a service token" in await fault(resp)
    # A user token that carries the service role is still no *service token*.
    resp = await client.patch("/v2/accelerator_requests", json={arq["uuid"]: ops},
                              headers={"X-Auth-Token": tokens["nova"]})
    assert resp.status == 403
    resp = await client.patch("/v2/accelerator_requests", json={arq["uuid"]: ops},
                              headers={**member, "X-Service-Token": tokens["nova"]})
    assert resp.status == 202, await resp.text()
    await app[BINDER].drain()
    resp = await client.get(f"/v2/accelerator_requests/{arq['uuid']}", headers=member)
    body = await resp.json()
    assert body["state"] == "Bound"
    assert body["project_id"] == arq["project_id"]


async def test_invalid_service_token_is_401(ks, tokens):
    client, _ = ks
    resp = await client.get("/v2/device_profiles",
                            headers={"X-Auth-Token": tokens["member"], "X-Service-Token": "bogus"})
    assert resp.status == 401
    assert "X-Service-Token" in await fault(resp)


async def test_arqs_of_another_project_are_invisible(ks, tokens, sqlite_store):
    client, _ = ks
    add_profile(sqlite_store, "dp", [{"resources:FPGA": "1"}])
    resp = await client.post("/v2/accelerator_requests", json={"device_profile_name": "dp"},
                             headers={"X-Auth-Token": tokens["nova"]})
    assert resp.status == 201
    theirs = (await resp.json())["arqs"][0]["uuid"]
    member = {"X-Auth-Token": tokens["member"]}
    resp = await client.get("/v2/accelerator_requests", headers=member)
    assert theirs not in {a["uuid"] for a in (await resp.json())["arqs"]}
    assert (await client.get(f"/v2/accelerator_requests/{theirs}", headers=member)).status == 404


async def test_system_scoped_token_is_accepted(ks, keystone):
    """The specs' system admin and reader (issue 17); test_policy_matrix.py has what each may do."""
    client, _ = ks
    resp = await client.get("/v2/device_profiles", headers={"X-Auth-Token": keystone.token(ADMIN, True)})
    assert resp.status == 200, await resp.text()


async def test_cache_hit_avoids_a_second_keystone_call(ks, keystone, tokens):
    client, app = ks
    auth = app[AUTH]
    headers = {"X-Auth-Token": tokens["member"]}
    assert (await client.get("/v2/device_profiles", headers=headers)).status == 200
    calls = auth.keystone_calls
    for _ in range(3):
        assert (await client.get("/v2/device_profiles", headers=headers)).status == 200
    assert auth.keystone_calls == calls
    # Another token is another call; a rejected token is cached too.
    for _ in range(2):
        assert (await client.get("/v2/device_profiles", headers={"X-Auth-Token": "junk"})).status == 401
    assert auth.keystone_calls == calls + 1


async def test_revoked_token_is_refused_once_the_cache_lapses(keystone, ks_app_factory):
    client, app = await ks_app_factory(keystone.url, token_cache_seconds=0)
    token = keystone.token(MEMBER)
    headers = {"X-Auth-Token": token}
    assert (await client.get("/v2/device_profiles", headers=headers)).status == 200
    keystone.revoke(token)
    assert (await client.get("/v2/device_profiles", headers=headers)).status == 401
    assert app[AUTH].keystone_calls == 2


async def test_keystone_unreachable_is_503_not_401(ks_app_factory):
    from servers import free_port

    client, _ = await ks_app_factory(f"http://127.0.0.1:{free_port()}/v3")
    resp = await client.get("/v2/device_profiles", headers={"X-Auth-Token": "anything"})
    assert resp.status == 503
    assert json.loads((await resp.json())["error_message"])["faultcode"] == "Server"

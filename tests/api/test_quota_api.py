"""Quotas through the API: a bind over the `[quota]` limit is 403 in Cyborg's body naming the
resource, limit and usage, and changes nothing; GET /v2/quotas/usage shows usage and limits (a
project its own, an admin any)."""

from __future__ import annotations

import uuid

import pytest

from cyborg_errors import cyborg_fault
from factories import add_device, add_profile
from rayborg.api.app import create_app
from rayborg.settings import Settings

MEMBER = {"X-Project-Id": "p1", "X-User-Id": "u1", "X-Roles": "member"}
NOVA = {**MEMBER, "X-Service-Roles": "service"}
OTHER = {"X-Project-Id": "p2", "X-User-Id": "u2", "X-Roles": "member"}
ADMIN = {"X-Project-Id": "p0", "X-User-Id": "a", "X-Roles": "admin"}
USAGE = "/v2/quotas/usage"


@pytest.fixture
async def client(aiohttp_client, store, database_url):
    settings = Settings(database_url=database_url, quota={"default": -1, "FPGA": 1}, _env_file=None)
    return await aiohttp_client(create_app(settings, store))


@pytest.fixture
def tree(store):
    add_profile(store, "dp", [{"resources:FPGA": "1"}])
    return add_device(store, handles_per_deployable=4)


async def create(client, headers=MEMBER) -> str:
    resp = await client.post("/v2/accelerator_requests", json={"device_profile_name": "dp"}, headers=headers)
    assert resp.status == 201, await resp.text()
    return (await resp.json())["arqs"][0]["uuid"]


async def bind(client, tree, arq: str, headers=NOVA):
    ops = [{"op": "add", "path": "/hostname", "value": "host1"},
           {"op": "add", "path": "/device_rp_uuid", "value": tree.rp_uuids[0]},
           {"op": "add", "path": "/instance_uuid", "value": str(uuid.uuid4())}]
    return await client.patch("/v2/accelerator_requests", json={arq: ops}, headers=headers)


async def usages(client, headers=MEMBER, query: str = "", status: int = 200):
    resp = await client.get(USAGE + query, headers=headers)
    if status != 200:
        return await cyborg_fault(resp, status)
    assert resp.status == 200, await resp.text()
    return (await resp.json())["quota_usages"]


async def test_bind_over_quota_is_403_and_changes_nothing(client, tree):
    first, second = await create(client), await create(client)
    assert (await bind(client, tree, first)).status == 202
    refused = await cyborg_fault(await bind(client, tree, second), 403)
    assert "FPGA" in refused and "limit 1" in refused and "usage 1" in refused
    shown = await client.get(f"/v2/accelerator_requests/{second}", headers=MEMBER)
    assert (await shown.json())["state"] == "Initial"
    other = await create(client, OTHER)  # another project has a quota of its own
    assert (await bind(client, tree, other, {**OTHER, "X-Service-Roles": "service"})).status == 202


async def test_usage_shows_own_project_and_admin_any(client, tree):
    assert await usages(client) == [{"project_id": "p1", "resource": "FPGA", "used": 0, "reserved": 0, "limit": 1}]
    assert (await bind(client, tree, await create(client))).status == 202
    mine = await usages(client)
    assert len(mine) == 1 and mine[0]["used"] + mine[0]["reserved"] == 1 and mine[0]["limit"] == 1
    assert await usages(client, OTHER) == [{"project_id": "p2", "resource": "FPGA", "used": 0, "reserved": 0,
                                            "limit": 1}]
    assert "another project" in await usages(client, OTHER, "?project_id=p1", status=403)
    seen = await usages(client, ADMIN, "?project_id=p1")  # the bind may have finished meanwhile
    assert [(u["project_id"], u["resource"], u["used"] + u["reserved"]) for u in seen] == [("p1", "FPGA", 1)]
    assert [u["project_id"] for u in await usages(client, ADMIN)] == ["p1"]  # every project holding any
    assert "Unknown argument" in await usages(client, MEMBER, "?project=p1", status=400)


def test_quota_limits_from_the_environment_and_bad_ones(monkeypatch, tmp_path):
    from rayborg.settings import SettingsError, load_settings

    monkeypatch.setenv("RAYBORG_CONFIG", str(tmp_path / "none.toml"))
    (tmp_path / "none.toml").write_text("[quota]\ndefault = 2\n")
    monkeypatch.setenv("RAYBORG_QUOTA__CUSTOM_QAT", "3")  # arrives lower-cased
    assert load_settings().quota == {"default": 2, "CUSTOM_QAT": 3}
    monkeypatch.setenv("RAYBORG_QUOTA__FPGA", "-2")
    with pytest.raises(SettingsError, match="FPGA = -2"):
        load_settings()


def test_claims_through_ray_get_the_settings_limits():
    """The binders check rayborg.claim against [quota] too: it reaches them in the RuntimeConfig."""
    from rayborg.actor_runtime import runtime_config

    settings = Settings(database_url="sqlite://", quota={"default": 3, "FPGA": 1}, _env_file=None)
    assert runtime_config(settings).quota == {"default": 3, "FPGA": 1}
    assert runtime_config(settings).unified_limits is None  # noauth: never Keystone's
    keystone = Settings(database_url="sqlite://", auth_strategy="keystone", _env_file=None,
                        keystone={"auth_url": "http://k/v3"},
                        unified_limits={"enabled": True, "endpoint_id": "e"})
    assert runtime_config(keystone).unified_limits["endpoint_id"] == "e"


def test_unified_limits_merge_and_cache():
    """Keystone's project limits override the registered ones, names other than `class:RC` are not
    ours, and a project's limits are read again only after cache_seconds."""
    from rayborg.actors.unified_limits import UnifiedLimits
    from rayborg.store.quotas import Limits

    class Enforcer:
        def get_registered_limits(self, names):
            return [("class:FPGA", 2), ("class:PGPU", 4), ("servers", 10)]

        def get_project_limits(self, project, names):
            return [("class:FPGA", 1)] if project == "pa" else []

    now = [0.0]
    source = UnifiedLimits({}, {"cache_seconds": 5}, clock=lambda: now[0])
    source._enforcer = Enforcer()
    limits = Limits(per_project=source)
    assert (limits.of("pa", "FPGA"), limits.of("pb", "FPGA"), limits.of("pa", "PGPU")) == (1, 2, 4)
    assert limits.of("pa", "VGPU") == -1 and limits.classes("pa") == ["FPGA", "PGPU"] and limits.enforced
    assert source.reads == 2
    now[0] = 4.9
    limits.of("pa", "FPGA")
    assert source.reads == 2
    now[0] = 5.1
    limits.of("pa", "FPGA")
    assert source.reads == 3

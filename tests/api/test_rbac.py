"""RBAC matrix: every route x role set (none, reader, member, manager, admin, service) x with/without a
service token, against api.md §3.2 (upstream defaults with the legacy rules ORed in) and the
service-token gate of §3.3. Denials are 403 naming the rule; allowed requests get their success code.
Also: project isolation of ARQs, and an operator policy file changing the outcome."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest
from cyborg_errors import cyborg_fault
from factories import add_device, add_profile

from rayborg.api.app import ROUTES
from rayborg.api.app_keys import BINDER

PROJECT, OTHER = "p-own", "p-other"
ROLE_SETS = ["none", "reader", "member", "manager", "admin", "service"]
EVERYONE = set(ROLE_SETS)
MANAGERS = {"manager", "admin"}
ADMINS = {"admin"}
ARQ_CREATORS = {"member", "manager", "admin", "service"}  # project_member_or_service | member_or_admin

# Who passes each rule with the default policy (api.md §3.2; the legacy admin_or_owner admits every
# project-scoped caller because the target is the caller's own project).
ALLOWED = {
    "cyborg:device_profile:get_all": EVERYONE, "cyborg:device_profile:get_one": EVERYONE,
    "cyborg:device_profile:create": ADMINS, "cyborg:device_profile:delete": ADMINS,
    "cyborg:arq:get_all": EVERYONE, "cyborg:arq:get_one": EVERYONE, "cyborg:arq:create": ARQ_CREATORS,
    "cyborg:arq:update": EVERYONE, "cyborg:arq:delete": EVERYONE,
    "cyborg:device:get_all": MANAGERS, "cyborg:device:get_one": MANAGERS,
    "cyborg:device:enable": ADMINS, "cyborg:device:disable": ADMINS,
    "cyborg:deployable:get_all": MANAGERS, "cyborg:deployable:get_one": MANAGERS,
    "cyborg:deployable:program": ADMINS,
    "cyborg:attribute:get_all": MANAGERS, "cyborg:attribute:get_one": MANAGERS,
    "cyborg:attribute:create": ADMINS, "cyborg:attribute:delete": ADMINS, "cyborg:attribute:update": ADMINS,
    "cyborg:quota:get": EVERYONE,
}
SETUP = {"X-Project-Id": PROJECT, "X-User-Id": "setup", "X-Roles": "admin", "X-Service-Roles": "service"}


def caller(roles: str, service: bool, project: str = PROJECT) -> dict[str, str]:
    headers = {"X-Project-Id": project, "X-User-Id": f"user-{roles}"}
    if roles != "none":
        headers["X-Roles"] = roles
    if service:
        headers["X-Service-Roles"] = "service"
    return headers


async def denial(resp) -> str | None:
    """The faultstring of Cyborg's 403 fault, or None when `resp` is anything else: the matrix collects
    every failing caller instead of stopping at the first."""
    try:
        return await cyborg_fault(resp, 403)
    except AssertionError:
        return None


class World:
    """A seeded database and helpers that make fresh resources for destructive requests."""

    def __init__(self, client, store, app):
        self.client, self.store, self.app = client, store, app
        self.tree = add_device(store, deployables=2, handles_per_deployable=16)
        self.profile_uuid = add_profile(store, "dp", [{"resources:FPGA": "1"}])
        self.device_id = self.tree.deployable_ids[0]

    async def setup(self, method: str, url: str, body=None, status: int = 200):
        resp = await self.client.request(method, url, json=body, headers=SETUP)
        assert resp.status == status, (method, url, await resp.text())
        return await resp.json() if resp.content_type == "application/json" else None

    def fresh_profile(self) -> tuple[str, str]:
        name = f"p{uuid.uuid4().hex[:10]}"
        return name, add_profile(self.store, name, [{"resources:FPGA": "1"}])

    async def fresh_arq(self) -> str:
        body = await self.setup("POST", "/v2/accelerator_requests", {"device_profile_name": "dp"}, 201)
        return body["arqs"][0]["uuid"]

    def bind_ops(self, instance: str) -> list[dict]:
        return [{"op": "add", "path": "/hostname", "value": "host1"},
                {"op": "add", "path": "/device_rp_uuid", "value": self.tree.rp_uuids[0]},
                {"op": "add", "path": "/instance_uuid", "value": instance}]

    async def bound_arq(self) -> tuple[str, str]:
        arq, instance = await self.fresh_arq(), str(uuid.uuid4())
        await self.setup("PATCH", "/v2/accelerator_requests", {arq: self.bind_ops(instance)}, 202)
        await self.app[BINDER].drain()
        return arq, instance

    async def attribute_uuid(self) -> str:
        body = await self.setup("POST", "/v2/attributes", {"deployable_id": self.device_id,
                                                           "key": f"k-{uuid.uuid4()}", "value": "v"}, 201)
        return body["uuid"]


Request = tuple[str, str, object]


@dataclass
class Case:
    method: str
    path: str               # the route, as in ROUTES
    rule: str | None        # None: public
    success: int
    build: Callable[[World], Awaitable[Request]]
    service_gate: bool = False
    variant: str = ""

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}{' ' + self.variant if self.variant else ''}"


def static(method: str, url: str, body=None) -> Callable[[World], Awaitable[Request]]:
    async def build(world: World) -> Request:
        return method, url, body
    return build


async def _profile_show(w):
    return "GET", f"/v2/device_profiles/{w.profile_uuid}", None


async def _profile_create(w):
    return "POST", "/v2/device_profiles", [{"name": f"n{uuid.uuid4().hex[:10]}", "groups": [{"resources:FPGA": "1"}]}]


async def _profile_delete_query(w):
    return "DELETE", f"/v2/device_profiles?value={w.fresh_profile()[0]}", None


async def _profile_delete_path(w):
    return "DELETE", f"/v2/device_profiles/{w.fresh_profile()[1]}", None


async def _arq_show(w):
    return "GET", f"/v2/accelerator_requests/{await w.fresh_arq()}", None


async def _arq_bind(w):
    arq = await w.fresh_arq()
    return "PATCH", "/v2/accelerator_requests", {arq: w.bind_ops(str(uuid.uuid4()))}


async def _arq_bind_one(w):
    arq = await w.fresh_arq()
    return "PATCH", f"/v2/accelerator_requests/{arq}", {arq: w.bind_ops(str(uuid.uuid4()))}


async def _arq_unbind(w):
    arq, _ = await w.bound_arq()
    ops = [{"op": "remove", "path": p} for p in ("/hostname", "/device_rp_uuid", "/instance_uuid")]
    return "PATCH", "/v2/accelerator_requests", {arq: ops}


async def _arq_delete_unbound(w):
    return "DELETE", f"/v2/accelerator_requests?arqs={await w.fresh_arq()}", None


async def _arq_delete_bound(w):
    arq, _ = await w.bound_arq()
    return "DELETE", f"/v2/accelerator_requests?arqs={arq}", None


async def _arq_delete_instance(w):
    _, instance = await w.bound_arq()
    return "DELETE", f"/v2/accelerator_requests?instance={instance}", None


async def _arq_delete_one(w):
    return "DELETE", f"/v2/accelerator_requests/{await w.fresh_arq()}", None


def _device(suffix: str = "", method: str = "GET"):
    async def build(w):
        return method, f"/v2/devices/{w.tree.device_uuid}{suffix}", None
    return build


async def _deployable_show(w):
    return "GET", f"/v2/deployables/{w.tree.deployable_uuids[0]}", None


def _program(twice: bool):
    async def build(w):
        dep = w.tree.deployable_uuids[1]  # never bound: programming is not refused with 409
        url = f"/v2/deployables/{dep}/program" + (f"/{dep}" if twice else "")
        return "PATCH", url, [{"op": "replace", "path": "/program", "value": [{"image_uuid": str(uuid.uuid4())}]}]
    return build


async def _attribute_show(w):
    return "GET", f"/v2/attributes/{await w.attribute_uuid()}", None


async def _attribute_create(w):
    return "POST", "/v2/attributes", {"deployable_id": w.device_id, "key": f"phys_net-{uuid.uuid4()}",
                                      "value": "physnet1"}


async def _attribute_delete(w):
    return "DELETE", f"/v2/attributes/{await w.attribute_uuid()}", None


def _per_deployable(method: str, one: bool, plural: bool):
    """The 2023.1 per-deployable attribute routes (singular as specified, plural alias): each destructive
    call gets its own attribute (or, to delete all, its own deployable)."""
    async def build(w):
        dep = w.tree.deployable_uuids[1]
        if method == "DELETE" and not one:
            dep = add_device(w.store, hostname=f"rbac-{uuid.uuid4().hex[:8]}").deployable_uuids[0]
        base = f"/v2/{'deployables' if plural else 'deployable'}/{dep}/{'attributes' if plural else 'attribute'}"
        key = f"k-{uuid.uuid4().hex}"
        if method == "POST":
            return method, base, [{"key": key, "value": "v"}]
        if not one:
            return method, base, None
        await w.setup("POST", base, [{"key": key, "value": "v"}], 204)
        return method, f"{base}/{key}", {"value": "v2"} if method == "PUT" else None
    return build


def _per_deployable_cases() -> list[Case]:
    cases = []
    for plural in (False, True):
        base = "/v2/deployables/{uuid}/attributes" if plural else "/v2/deployable/{uuid}/attribute"
        for method, one, rule, success in (("GET", False, "get_all", 200), ("POST", False, "create", 204),
                                           ("DELETE", False, "delete", 204), ("GET", True, "get_one", 200),
                                           ("PUT", True, "update", 204), ("DELETE", True, "delete", 204)):
            cases.append(Case(method, base + ("/{uuid_or_key}" if one else ""), f"cyborg:attribute:{rule}",
                              success, _per_deployable(method, one, plural)))
    return cases


AR = "/v2/accelerator_requests"
CASES = [
    Case("GET", "/", None, 200, static("GET", "/")),
    Case("GET", "/v2", None, 200, static("GET", "/v2")),
    Case("GET", "/v2/openapi.json", None, 200, static("GET", "/v2/openapi.json")),
    Case("GET", "/metrics", None, 200, static("GET", "/metrics")),  # public unless metrics_public = false
    Case("GET", "/v2/device_profiles", "cyborg:device_profile:get_all", 200, static("GET", "/v2/device_profiles")),
    Case("GET", "/v2/device_profiles/{name_or_uuid}", "cyborg:device_profile:get_one", 200, _profile_show),
    Case("POST", "/v2/device_profiles", "cyborg:device_profile:create", 201, _profile_create),
    Case("DELETE", "/v2/device_profiles", "cyborg:device_profile:delete", 204, _profile_delete_query),
    Case("DELETE", "/v2/device_profiles/{names_or_uuid}", "cyborg:device_profile:delete", 204,
         _profile_delete_path),
    Case("GET", AR, "cyborg:arq:get_all", 200, static("GET", AR)),
    Case("POST", AR, "cyborg:arq:create", 201, static("POST", AR, {"device_profile_name": "dp"})),
    Case("PATCH", AR, "cyborg:arq:update", 202, _arq_bind, service_gate=True, variant="bind"),
    Case("PATCH", AR, "cyborg:arq:update", 202, _arq_unbind, service_gate=True, variant="unbind"),
    Case("DELETE", AR, "cyborg:arq:delete", 204, _arq_delete_unbound, variant="unbound ?arqs="),
    Case("DELETE", AR, "cyborg:arq:delete", 204, _arq_delete_bound, service_gate=True, variant="bound ?arqs="),
    Case("DELETE", AR, "cyborg:arq:delete", 204, _arq_delete_instance, service_gate=True, variant="?instance="),
    Case("GET", AR + "/{uuid}", "cyborg:arq:get_one", 200, _arq_show),
    Case("PATCH", AR + "/{uuid}", "cyborg:arq:update", 202, _arq_bind_one, service_gate=True),
    Case("DELETE", AR + "/{uuid}", "cyborg:arq:delete", 204, _arq_delete_one),
    Case("GET", "/v2/devices", "cyborg:device:get_all", 200, static("GET", "/v2/devices")),
    Case("GET", "/v2/devices/{uuid}", "cyborg:device:get_one", 200, _device()),
    Case("POST", "/v2/devices/{uuid}/enable", "cyborg:device:enable", 200, _device("/enable", "POST")),
    Case("POST", "/v2/devices/{uuid}/disable", "cyborg:device:disable", 200, _device("/disable", "POST")),
    Case("GET", "/v2/deployables", "cyborg:deployable:get_all", 200, static("GET", "/v2/deployables")),
    Case("GET", "/v2/deployables/{uuid}", "cyborg:deployable:get_one", 200, _deployable_show),
    # allowed: past the policy to 503, as this app has no actors to program with (tests/api/test_deployables.py)
    Case("PATCH", "/v2/deployables/{uuid}/program", "cyborg:deployable:program", 503, _program(False)),
    Case("PATCH", "/v2/deployables/{uuid}/program/{uuid2}", "cyborg:deployable:program", 503, _program(True)),
    Case("GET", "/v2/attributes", "cyborg:attribute:get_all", 200, static("GET", "/v2/attributes")),
    Case("POST", "/v2/attributes", "cyborg:attribute:create", 201, _attribute_create),
    Case("GET", "/v2/attributes/{uuid}", "cyborg:attribute:get_one", 200, _attribute_show),
    Case("DELETE", "/v2/attributes/{uuid}", "cyborg:attribute:delete", 204, _attribute_delete),
    *_per_deployable_cases(),
    Case("GET", "/v2/quotas/usage", "cyborg:quota:get", 200, static("GET", "/v2/quotas/usage")),
]
CALLERS = list(itertools.product(ROLE_SETS, (False, True)))


@pytest.fixture
async def world(sqlite_url, aiohttp_client):
    """RBAC does not depend on the database: SQLite only."""
    from rayborg.api.app import create_app
    from rayborg.settings import Settings
    from rayborg.store.engine import Store
    from rayborg.store.migrate import upgrade

    store = Store(sqlite_url)
    upgrade(store.engine)
    app = create_app(Settings(database_url=sqlite_url, _env_file=None), store)
    client = await aiohttp_client(app)
    yield World(client, store, app)
    store.dispose()


def test_matrix_covers_every_route():
    assert {(c.method, c.path) for c in CASES} == {(m, p) for m, p, _ in ROUTES}
    assert set(ALLOWED) == {c.rule for c in CASES if c.rule}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_rbac_matrix(world, case: Case):
    failures = []
    for roles, service in CALLERS:
        method, url, body = await case.build(world)
        resp = await world.client.request(method, url, json=body, headers=caller(roles, service))
        who = f"{roles}{' +service token' if service else ''}"
        if case.rule is not None and roles not in ALLOWED[case.rule]:
            expected = f"Access was denied to the following resource: {case.rule}"
            if await denial(resp) != expected:
                failures.append(f"{who}: expected 403 naming {case.rule}, got {resp.status} {await resp.text()}")
        elif case.service_gate and not service:
            if "service token" not in (await denial(resp) or ""):
                failures.append(f"{who}: expected 403 service token required, got {resp.status} "
                                f"{await resp.text()}")
        elif resp.status != case.success:
            failures.append(f"{who}: expected {case.success}, got {resp.status} {await resp.text()}")
    assert not failures, f"{case.id}:\n" + "\n".join(failures)


async def test_arqs_of_another_project_are_invisible(world):
    arq, instance = await world.bound_arq()
    unbound = await world.fresh_arq()
    for roles in ("none", "reader", "member", "manager"):
        headers = caller(roles, True, project=OTHER)
        resp = await world.client.get(AR, headers=headers)
        assert resp.status == 200 and (await resp.json())["arqs"] == [], roles
        resp = await world.client.get(f"{AR}?instance={instance}", headers=headers)
        assert (await resp.json())["arqs"] == [], roles
        for uuid_ in (arq, unbound):
            assert (await world.client.get(f"{AR}/{uuid_}", headers=headers)).status == 404, roles
        assert (await world.client.delete(f"{AR}?arqs={unbound}", headers=headers)).status == 404, roles
        resp = await world.client.patch(AR, json={unbound: world.bind_ops(str(uuid.uuid4()))}, headers=headers)
        assert resp.status == 404, roles
    # Still there and untouched for their owner; an admin of any project sees every ARQ.
    resp = await world.client.get(f"{AR}/{unbound}", headers=caller("member", False))
    assert resp.status == 200 and (await resp.json())["state"] == "Initial"
    resp = await world.client.get(AR, headers=caller("admin", False, project=OTHER))
    assert {arq, unbound} <= {a["uuid"] for a in (await resp.json())["arqs"]}


async def test_service_token_alone_does_not_elevate(world):
    """X-Service-Roles gates binds; it is not a role: a reader with Nova's token still cannot create."""
    resp = await world.client.post(AR, json={"device_profile_name": "dp"}, headers=caller("reader", True))
    assert "cyborg:arq:create" in await cyborg_fault(resp, 403)
    resp = await world.client.get("/v2/devices", headers=caller("member", True))
    assert resp.status == 403


@pytest.mark.parametrize("rules,requests", [
    ({"cyborg:device:get_all": "role:reader"},
     [("reader", "GET", "/v2/devices", 200), ("none", "GET", "/v2/devices", 403),
      ("reader", "GET", "/v2/deployables", 403)]),
    ({"cyborg:device_profile:get_all": "role:admin", "cyborg:arq:create": "role:reader"},
     [("member", "GET", "/v2/device_profiles", 403), ("admin", "GET", "/v2/device_profiles", 200),
      ("reader", "POST", AR, 201), ("none", "POST", AR, 403)]),
], ids=["open-device-list-to-readers", "tighten-profiles-loosen-arqs"])
async def test_operator_policy_file_changes_the_outcome(tmp_path, sqlite_url, aiohttp_client, rules, requests):
    from rayborg.api.app import create_app
    from rayborg.settings import Settings
    from rayborg.store.engine import Store
    from rayborg.store.migrate import upgrade

    policy = tmp_path / "policy.yaml"
    policy.write_text("".join(f'"{rule}": "{check}"\n' for rule, check in rules.items()))
    store = Store(sqlite_url)
    upgrade(store.engine)
    add_device(store)
    add_profile(store, "dp", [{"resources:FPGA": "1"}])
    client = await aiohttp_client(create_app(Settings(database_url=sqlite_url, policy_file=str(policy),
                                                      _env_file=None), store))
    for roles, method, url, status in requests:
        body = {"device_profile_name": "dp"} if method == "POST" else None
        resp = await client.request(method, url, json=body, headers=caller(roles, False))
        assert resp.status == status, (roles, method, url, await resp.text())
        if status == 403:
            message = await cyborg_fault(resp, 403)
            assert message.startswith("Access was denied to the following resource: cyborg:")
    store.dispose()

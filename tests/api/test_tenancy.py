"""Tenancy (issue 14, items 1-3): policy answers are never reused between callers a rule tells
apart, a non-admin without a project acts on no project's ARQs, and binding to an instance uuid
tells nothing about other projects' ARQs."""

from __future__ import annotations

import json
import uuid

import pytest
from cyborg_errors import cyborg_fault
from factories import add_device, add_profile, nova_bind_ops

from rayborg.api.app import create_app
from rayborg.api.app_keys import BINDER
from rayborg.api.context import RequestContext, with_implied
from rayborg.api.policy import PolicyEnforcer
from rayborg.settings import Settings

A = {"X-Project-Id": "p-a", "X-User-Id": "u-a", "X-Roles": "member"}
B = {"X-Project-Id": "p-b", "X-User-Id": "u-b", "X-Roles": "member"}
A_NOVA, B_NOVA = ({**h, "X-Service-Roles": "service"} for h in (A, B))
NO_PROJECT = {"X-User-Id": "u-x", "X-Roles": "member"}
NO_PROJECT_NOVA = {**NO_PROJECT, "X-Service-Roles": "service"}
ARQS = "/v2/accelerator_requests"


@pytest.fixture
def tree(store):
    add_profile(store, "dp", [{"resources:FPGA": "1"}])
    return add_device(store, handles_per_deployable=4)


async def create(client, headers) -> str:
    resp = await client.post(ARQS, json={"device_profile_name": "dp"}, headers=headers)
    assert resp.status == 201, await resp.text()
    return (await resp.json())["arqs"][0]["uuid"]


async def listed(client, headers, query="") -> list[str]:
    resp = await client.get(ARQS + query, headers=headers)
    assert resp.status == 200, await resp.text()
    return sorted(a["uuid"] for a in (await resp.json())["arqs"])


# -- 1. policy answers are reused only between callers equal in what the rule reads ------------------

async def policy_client(aiohttp_client, tmp_path, sqlite_url, store, rules: dict):
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(rules))
    settings = Settings(database_url=sqlite_url, policy_file=str(policy), _env_file=None)
    return await aiohttp_client(create_app(settings, store))


@pytest.fixture
def sqlite_store(sqlite_url):
    from rayborg.store.engine import Store
    from rayborg.store.migrate import upgrade

    s = Store(sqlite_url)
    upgrade(s.engine)
    add_profile(s, "dp", [{"resources:FPGA": "1"}])
    yield s
    s.dispose()


@pytest.mark.parametrize("first", ["owner", "other"])
async def test_project_rule_answers_each_project_for_itself(aiohttp_client, tmp_path, sqlite_url,
                                                           sqlite_store, first):
    """`project_id:<A>`: A may create, B may not, whoever asked first."""
    client = await policy_client(aiohttp_client, tmp_path, sqlite_url, sqlite_store,
                                 {"cyborg:arq:create": "project_id:p-a"})
    order = [(A, 201), (B, 403)] if first == "owner" else [(B, 403), (A, 201)]
    for _ in range(2):  # and again, now that both answers are known
        for headers, status in order:
            resp = await client.post(ARQS, json={"device_profile_name": "dp"}, headers=headers)
            if status == 403:
                assert "cyborg:arq:create" in await cyborg_fault(resp, 403)
            else:
                assert resp.status == 201, await resp.text()
    assert len(await listed(client, A)) == 2 and await listed(client, B) == []


async def test_user_rule_answers_each_user_for_itself(aiohttp_client, tmp_path, sqlite_url, sqlite_store):
    """`user_id:<u>`: two users of one project with the same roles still get their own answers."""
    client = await policy_client(aiohttp_client, tmp_path, sqlite_url, sqlite_store,
                                 {"cyborg:arq:get_all": "user_id:u-a"})
    same_project_other_user = {**A, "X-User-Id": "u-c"}
    for _ in range(2):
        assert (await client.get(ARQS, headers=A)).status == 200
        await cyborg_fault(await client.get(ARQS, headers=same_project_other_user), 403)


def _ctx(project: str, user: str, roles: str) -> RequestContext:
    return RequestContext(user_id=user, project_id=project, roles=with_implied(frozenset(roles.split(","))))


def test_answers_are_cached_on_what_each_rule_reads(monkeypatch, tmp_path):
    """The default rules read only the roles: one oslo.policy evaluation serves every project with
    those roles (the check stays off the hot path). An operator's `project_id:` rule is evaluated
    once per project, and a `role:` rule once per role set."""
    policy = tmp_path / "policy.yaml"
    policy.write_text('"cyborg:arq:create": "project_id:p-a or role:admin"\n')
    for enforcer, rule, per_project in ((PolicyEnforcer(), "cyborg:arq:get_all", False),
                                        (PolicyEnforcer(str(policy)), "cyborg:arq:create", True)):
        evaluated: list[RequestContext] = []
        real = enforcer.check
        monkeypatch.setattr(enforcer, "check",
                            lambda r, ctx, real=real: evaluated.append(ctx) or real(r, ctx))
        answers = {}
        for _ in range(3):
            for project in ("p-a", "p-b", "p-c"):
                for roles in ("member", "admin"):
                    answers[project, roles] = enforcer.allowed(rule, _ctx(project, f"u-{project}", roles))
        assert len(evaluated) == (6 if per_project else 2)
        if per_project:
            assert answers == {("p-a", "member"): True, ("p-b", "member"): False, ("p-c", "member"): False,
                               ("p-a", "admin"): True, ("p-b", "admin"): True, ("p-c", "admin"): True}
        # Cached or not, the answer is oslo.policy's own.
        assert all(answers[p, r] == enforcer.check(rule, _ctx(p, f"u-{p}", r)) for p, r in answers)


def test_rules_that_read_the_caller(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text('"cyborg:arq:get_one": "user_id:%(project_id)s"\n'
                      '"cyborg:arq:delete": "not project_id:p-a and is_admin:True"\n'
                      '"cyborg:arq:update": "service_roles:service"\n')
    enforcer = PolicyEnforcer(str(policy))
    # The defaults' `project_id:%(project_id)s` compares the caller with its own project: roles only.
    assert enforcer.reads("cyborg:arq:get_all") == {"roles"}
    assert enforcer.reads("cyborg:arq:get_one") == {"user_id", "project_id"}
    assert enforcer.reads("cyborg:arq:delete") == {"project_id", "roles"}
    assert enforcer.reads("cyborg:arq:update") == {"service_roles"}


# -- 2. no project is not every project -----------------------------------------------------------

@pytest.mark.parametrize("headers", [NO_PROJECT, NO_PROJECT_NOVA, {**NO_PROJECT_NOVA, "X-Project-Id": ""}],
                         ids=["member", "member+service", "blank-project"])
async def test_a_caller_without_project_touches_no_arqs(client, tree, headers):
    arq = await create(client, A)
    bound = await create(client, A)
    instance = str(uuid.uuid4())
    resp = await client.patch(ARQS, json={bound: nova_bind_ops("host1", tree.rp_uuids[0], instance)}, headers=A_NOVA)
    assert resp.status == 202, await resp.text()
    await client.app[BINDER].drain()

    requests = [("GET", ARQS, None), ("GET", f"{ARQS}?instance={instance}", None),
                ("GET", f"{ARQS}/{arq}", None),
                ("POST", ARQS, {"device_profile_name": "dp"}),
                ("PATCH", ARQS, {arq: nova_bind_ops("host1", tree.rp_uuids[0], str(uuid.uuid4()))}),
                ("PATCH", ARQS, {bound: [{"op": "remove", "path": "/instance_uuid"}]}),
                ("PATCH", f"{ARQS}/{bound}", [{"op": "remove", "path": "/instance_uuid"}]),
                ("DELETE", f"{ARQS}?arqs={arq}", None), ("DELETE", f"{ARQS}/{arq}", None),
                ("DELETE", f"{ARQS}?instance={instance}", None)]
    for method, url, body in requests:
        resp = await client.request(method, url, json=body, headers=headers)
        if method == "PATCH" or "instance=" in url and method == "DELETE":
            if "X-Service-Roles" not in headers:
                await cyborg_fault(resp, 403)  # the service-token gate comes first
                continue
        assert "no project" in await cyborg_fault(resp, 403), (method, url)
    # Nothing changed: both ARQs are A's as they were, and nobody owns a new one.
    seen = {a["uuid"]: a for a in (await (await client.get(ARQS, headers=A)).json())["arqs"]}
    assert sorted(seen) == sorted([arq, bound])
    assert seen[arq]["state"] == "Initial" and seen[bound]["state"] == "Bound"
    assert sorted(await listed(client, {})) == sorted([arq, bound])  # the anonymous admin: nothing new


async def test_admins_and_anonymous_still_act_across_projects(client, tree):
    mine, theirs = await create(client, A), await create(client, B)
    admin_without_project = {"X-User-Id": "root", "X-Roles": "admin"}
    assert await listed(client, admin_without_project) == sorted([mine, theirs])
    assert await listed(client, {}) == sorted([mine, theirs])  # no identity headers: the admin service
    resp = await client.delete(f"{ARQS}?arqs={theirs}", headers=admin_without_project)
    assert resp.status == 204
    assert await listed(client, B) == []


# -- 3. binding to an instance uuid reveals nothing about other projects ---------------------------

async def test_bind_to_an_instance_another_project_uses_reveals_nothing(client, tree):
    """Only the caller's own ARQs count for "instance already has accelerator requests": another
    project's ARQs on that uuid neither refuse the bind nor show in what the caller sees."""
    instance = str(uuid.uuid4())
    a_arq = await create(client, A)
    resp = await client.patch(ARQS, json={a_arq: nova_bind_ops("host1", tree.rp_uuids[0], instance)}, headers=A_NOVA)
    assert resp.status == 202, await resp.text()

    b_arq = await create(client, B)
    resp = await client.patch(ARQS, json={b_arq: nova_bind_ops("host1", tree.rp_uuids[0], instance)}, headers=B_NOVA)
    assert resp.status == 202, await resp.text()
    await client.app[BINDER].drain()
    assert await listed(client, A, f"?instance={instance}") == [a_arq]
    assert await listed(client, B, f"?instance={instance}&bind_state=resolved") == [b_arq]

    # Within a project the rule holds as before: an instance's ARQs are bound in one request.
    again = await create(client, A)
    resp = await client.patch(ARQS, json={again: nova_bind_ops("host1", tree.rp_uuids[0], instance)}, headers=A_NOVA)
    assert "already has accelerator requests" in await cyborg_fault(resp, 400)
    # And an admin, who sees every project, is refused as before.
    admin_nova = {"X-Project-Id": "p-admin", "X-Roles": "admin", "X-Service-Roles": "service"}
    resp = await client.patch(ARQS, json={again: nova_bind_ops("host1", tree.rp_uuids[0], instance)}, headers=admin_nova)
    assert "already has accelerator requests" in await cyborg_fault(resp, 400)

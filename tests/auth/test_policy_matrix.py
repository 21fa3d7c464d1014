"""Every rule x persona against the policy-defaults-refresh specs' table (ussuri, victoria), with
`enforce_new_defaults` and `enforce_scope` each on and off: the personas' contexts built from the
noauth headers, and from real scoped tokens of a real Keystone (plus a few requests through the app).

Personas: SA system admin, SR system reader, PA project admin, PM project member, PR project reader
(all three of project A), OM a member of another project, SV a service user (role `service` only,
with its token also as the service token, as Nova sends it). The ARQ rules that act on an existing
ARQ (get_one, update, delete) are checked against an ARQ of project A: that is where another
project's member is refused; the API checks against the caller's own project and isolates in the
queries (an ARQ of another project is a 404)."""

from __future__ import annotations

import json

import pytest
from aiohttp.test_utils import make_mocked_request
from servers import MEMBER, User

from rayborg.api.auth import NoAuth
from rayborg.api.context import RequestContext
from rayborg.api.policy import API_RULES, PolicyEnforcer

PERSONAS = ("SA", "SR", "PA", "PM", "PR", "OM", "SV")
ALL = " ".join(PERSONAS)
OWNED = {"cyborg:arq:get_one", "cyborg:arq:update", "cyborg:arq:delete"}  # checked against A's ARQ
MODES = {  # column -> (enforce_new_defaults, enforce_scope)
    "legacy": (False, False), "legacy+scope": (False, True), "new": (True, False), "new+scope": (True, True)}

# The specs' personas are the `new+scope` column: project reader reads profiles and ARQs, project
# member writes ARQs (and Nova's service user), system reader reads devices, system admin writes
# profiles and devices, project admin programs deployables. Upstream 17's additions are kept: a
# service for ARQs, a project manager (so a project admin) for the device tree's reads. `legacy`
# ORs each rule's deprecated default in (upstream's behaviour: admin_or_owner admits any caller of the
# target's project, is_admin any admin); without scope checks a system-scoped caller also passes
# `project_id:%(project_id)s` against its own (no) project.
TABLE: dict[str, tuple[str, str, str, str]] = {
    #                                  legacy             legacy+scope      new              new+scope
    "cyborg:device_profile:get_all": (ALL, ALL, ALL, ALL),
    "cyborg:device_profile:get_one": (ALL, ALL, ALL, ALL),
    "cyborg:device_profile:create": ("SA PA", "SA", "SA", "SA"),
    "cyborg:device_profile:delete": ("SA PA", "SA", "SA", "SA"),
    "cyborg:arq:get_all": (ALL, "PA PM PR OM SV", ALL, "PA PM PR OM SV"),
    "cyborg:arq:get_one": ("SA PA PM PR SV", "PA PM PR SV", "PA PM PR SV", "PA PM PR SV"),
    "cyborg:arq:create": ("SA PA PM OM SV", "PA PM OM SV", "SA PA PM OM SV", "PA PM OM SV"),
    "cyborg:arq:update": ("SA PA PM PR SV", "PA PM PR SV", "PA PM SV", "PA PM SV"),
    "cyborg:arq:delete": ("SA PA PM PR SV", "PA PM PR SV", "PA PM SV", "PA PM SV"),
    "cyborg:device:get_all": ("SA SR PA",) * 4,
    "cyborg:device:get_one": ("SA SR PA",) * 4,
    "cyborg:device:disable": ("SA PA", "SA", "SA", "SA"),
    "cyborg:device:enable": ("SA PA", "SA", "SA", "SA"),
    "cyborg:deployable:get_all": ("SA SR PA",) * 4,
    "cyborg:deployable:get_one": ("SA SR PA",) * 4,
    "cyborg:deployable:program": ("SA PA",) * 4,
    "cyborg:attribute:get_all": ("SA SR PA",) * 4,
    "cyborg:attribute:get_one": ("SA SR PA",) * 4,
    "cyborg:attribute:create": ("SA PA", "SA", "SA", "SA"),
    "cyborg:attribute:delete": ("SA PA", "SA", "SA", "SA"),
    "cyborg:attribute:update": ("SA PA", "SA", "SA", "SA"),
    "cyborg:quota:get": (ALL, ALL, ALL, ALL),  # another project's usage: admins only, in the handler
}


def expected(mode: str, rule: str) -> set[str]:
    return set(TABLE[rule][list(MODES).index(mode)].split())


def allowed(enforcer: PolicyEnforcer, rule: str, ctx: RequestContext, owner: str) -> bool:
    if rule in OWNED:
        return enforcer.check(rule, ctx, {"project_id": owner, "user_id": "owner"})
    return enforcer.allowed(rule, ctx)


def mismatches(contexts: dict[str, RequestContext], owner: str) -> list[str]:
    """Every (mode, rule, persona) whose answer differs from TABLE; each enforcer answers twice, the
    second time from its cache."""
    out = []
    for mode, (new, scope) in MODES.items():
        enforcer = PolicyEnforcer(enforce_new_defaults=new, enforce_scope=scope)
        for _ in range(2):
            for rule, *_ in API_RULES:
                got = {p for p, ctx in contexts.items() if allowed(enforcer, rule, ctx, owner)}
                if got != expected(mode, rule):
                    out.append(f"{mode} {rule}: allowed {sorted(got)}, table {sorted(expected(mode, rule))}")
    return out


def test_the_table_covers_every_rule():
    assert set(TABLE) == {name for name, *_ in API_RULES}


# -- noauth: the identity headers keystonemiddleware sets -------------------------------------------

NOAUTH_HEADERS = {
    "SA": {"X-User-Id": "sa", "X-Roles": "admin", "OpenStack-System-Scope": "all"},
    "SR": {"X-User-Id": "sr", "X-Roles": "reader", "OpenStack-System-Scope": "all"},
    "PA": {"X-User-Id": "pa", "X-Project-Id": "A", "X-Roles": "admin"},
    "PM": {"X-User-Id": "pm", "X-Project-Id": "A", "X-Roles": "member"},
    "PR": {"X-User-Id": "pr", "X-Project-Id": "A", "X-Roles": "reader"},
    "OM": {"X-User-Id": "om", "X-Project-Id": "B", "X-Roles": "member"},
    "SV": {"X-User-Id": "nova", "X-Project-Id": "service", "X-Roles": "service",
           "X-Service-Roles": "service"},
}


async def identify(auth, headers: dict[str, str]) -> RequestContext:
    return await auth.identify(make_mocked_request("GET", "/v2/devices", headers=headers))


async def test_noauth_personas_against_the_table():
    auth = NoAuth(["service"])
    contexts = {p: await identify(auth, h) for p, h in NOAUTH_HEADERS.items()}
    assert contexts["SA"].system_scope == "all" and contexts["PA"].system_scope is None
    assert mismatches(contexts, owner="A") == []


# -- keystone: real scoped tokens -------------------------------------------------------------------

OTHER = User("rayborg-other-member", "rayborg-other-project")
KS_PERSONAS = {  # persona -> (user, role, system-scoped)
    "SR": (User("rayborg-system-reader", ""), "reader", True),
    "PA": (User("rayborg-project-admin", MEMBER.project), "admin", False),
    "PM": (MEMBER, "member", False),
    "PR": (User("rayborg-project-reader", MEMBER.project), "reader", False),
    "OM": (OTHER, "member", False),
    "SV": (User("rayborg-service", "service"), "service", False),
}


@pytest.fixture(scope="module")
def ks_tokens(keystone) -> dict[str, str]:
    """A token per persona; the bootstrap admin holds admin on the system scope already."""
    from servers import ADMIN

    tokens = {"SA": keystone.token(ADMIN, system_scope=True)}
    for persona, (user, role, system) in KS_PERSONAS.items():
        keystone.ensure_persona(user, role, system)
        tokens[persona] = keystone.token(user, system_scope=system)
    return tokens


def ks_headers(tokens: dict[str, str], persona: str) -> dict[str, str]:
    headers = {"X-Auth-Token": tokens[persona]}
    if persona == "SV":
        headers["X-Service-Token"] = tokens["SV"]
    return headers


@pytest.mark.xdist_group("keystone")
@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_keystone_personas_against_the_table(keystone, ks_tokens):
    from servers import CYBORG

    from rayborg.api.keystone_auth import KeystoneAuth
    from rayborg.settings import KeystoneOptions, Settings

    settings = Settings(auth_strategy="keystone", keystone=KeystoneOptions(auth_url=keystone.url),
                        _env_file=None)
    auth = KeystoneAuth(settings, session=keystone.session(CYBORG))  # validates as rayborg serve does
    contexts = {p: await identify(auth, ks_headers(ks_tokens, p)) for p in PERSONAS}
    await auth.close()
    assert contexts["SA"].system_scope == "all" and contexts["SA"].project_id is None
    assert contexts["SR"].system_scope == "all" and "admin" not in contexts["SR"].roles
    assert contexts["PA"].project_id == contexts["PM"].project_id == contexts["PR"].project_id
    assert contexts["OM"].project_id != contexts["PM"].project_id and contexts["SV"].is_service
    assert mismatches(contexts, owner=contexts["PM"].project_id) == []


async def fault(resp) -> str:
    return json.loads((await resp.json())["error_message"])["faultstring"]


@pytest.mark.xdist_group("keystone")
@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_keystone_new_defaults_through_the_app(keystone, ks_tokens, ks_app_factory, sqlite_store):
    from factories import add_device

    add_device(sqlite_store)
    client, _ = await ks_app_factory(keystone.url, enforce_new_defaults=True, enforce_scope=True)

    async def call(persona: str, method: str, url: str, body=None):
        return await client.request(method, url, json=body, headers=ks_headers(ks_tokens, persona))

    profile = [{"name": "ks-new-dp", "groups": [{"resources:FPGA": "1"}]}]
    resp = await call("PA", "POST", "/v2/device_profiles", profile)  # a project admin: system admin's job
    assert resp.status == 403
    assert await fault(resp) == "Access was denied to the following resource: cyborg:device_profile:create"
    assert (await call("SA", "POST", "/v2/device_profiles", profile)).status == 201
    assert (await call("SR", "GET", "/v2/devices")).status == 200
    assert (await call("PM", "GET", "/v2/devices")).status == 403
    arq_body = {"device_profile_name": "ks-new-dp"}
    assert (await call("SR", "POST", "/v2/accelerator_requests", arq_body)).status == 403  # project scope
    resp = await call("PM", "POST", "/v2/accelerator_requests", arq_body)
    assert resp.status == 201, await resp.text()
    arq = (await resp.json())["arqs"][0]["uuid"]
    assert (await call("PR", "GET", f"/v2/accelerator_requests/{arq}")).status == 200
    assert (await call("PR", "DELETE", f"/v2/accelerator_requests/{arq}")).status == 403
    assert (await call("OM", "GET", f"/v2/accelerator_requests/{arq}")).status == 404  # isolated
    assert (await call("PM", "DELETE", f"/v2/accelerator_requests/{arq}")).status == 204


@pytest.mark.xdist_group("keystone")
@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_keystone_unscoped_token_is_403(keystone, ks_tokens, ks_app_factory):
    from keystoneauth1 import session as ks_session
    from keystoneauth1.identity import v3
    from servers import PASSWORD

    user = KS_PERSONAS["PR"][0]  # no default project: its token without a scope is unscoped
    token = ks_session.Session(auth=v3.Password(auth_url=keystone.url, username=user.name, password=PASSWORD,
                                                user_domain_id=user.domain)).get_token()
    client, _ = await ks_app_factory(keystone.url)
    resp = await client.get("/v2/device_profiles", headers={"X-Auth-Token": token})
    assert resp.status == 403
    assert "unscoped" in await fault(resp)

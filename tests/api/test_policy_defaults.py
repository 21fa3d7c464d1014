"""The policy defaults refresh (issue 17, items 4-5): the enforce_new_defaults / enforce_scope settings
reach the enforcer, the noauth system-scope header, answers cached apart per scope, and
`rayborg policy sample` (every rule with its default and operations, loadable by oslo.policy).
The rule x persona matrix is tests/auth/test_policy_matrix.py."""

from __future__ import annotations

import re
import uuid

import pytest
from cyborg_errors import cyborg_fault
from oslo_policy import policy as oslo

from rayborg.api.app import ROUTES, create_app
from rayborg.api.context import RequestContext, with_implied
from rayborg.api.policy import API_RULES, PolicyEnforcer, rule_defaults
from rayborg.cli import main
from rayborg.settings import Settings

SYSTEM_ADMIN = {"X-User-Id": "sa", "X-Roles": "admin", "OpenStack-System-Scope": "all"}
PROJECT_ADMIN = {"X-User-Id": "pa", "X-Project-Id": "p-a", "X-Roles": "admin"}
PROFILES = "/v2/device_profiles"


def profile() -> list[dict]:
    return [{"name": f"dp{uuid.uuid4().hex[:8]}", "groups": [{"resources:FPGA": "1"}]}]


async def app_client(aiohttp_client, sqlite_url, **settings):
    from rayborg.store.engine import Store
    from rayborg.store.migrate import upgrade

    store = Store(sqlite_url)
    upgrade(store.engine)
    settings = Settings(database_url=sqlite_url, _env_file=None, **settings)
    return await aiohttp_client(create_app(settings, store))


# -- item 4: the settings, the scope header ---------------------------------------------------------

async def test_new_defaults_and_scope_settings_reach_the_enforcer(aiohttp_client, sqlite_url):
    legacy = await app_client(aiohttp_client, sqlite_url)
    assert (await legacy.post(PROFILES, json=profile(), headers=PROJECT_ADMIN)).status == 201
    assert (await legacy.post(PROFILES, json=profile(), headers=SYSTEM_ADMIN)).status == 201
    for flags in ({"enforce_new_defaults": True}, {"enforce_scope": True}):
        client = await app_client(aiohttp_client, sqlite_url, **flags)
        denied = await cyborg_fault(await client.post(PROFILES, json=profile(), headers=PROJECT_ADMIN), 403)
        assert denied == "Access was denied to the following resource: cyborg:device_profile:create"
        assert (await client.post(PROFILES, json=profile(), headers=SYSTEM_ADMIN)).status == 201, flags


def test_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("RAYBORG_ENFORCE_NEW_DEFAULTS", "true")
    monkeypatch.setenv("RAYBORG_ENFORCE_SCOPE", "1")
    settings = Settings(_env_file=None)
    assert settings.enforce_new_defaults is True and settings.enforce_scope is True
    assert Settings(_env_file=None, enforce_scope=False).enforce_scope is False


@pytest.mark.parametrize("headers, message", [
    ({"OpenStack-System-Scope": "domain", "X-Roles": "admin"}, "must be 'all'"),
    ({**SYSTEM_ADMIN, "X-Project-Id": "p-a"}, "never both"),
])
async def test_a_bad_system_scope_header_is_400(aiohttp_client, sqlite_url, headers, message):
    client = await app_client(aiohttp_client, sqlite_url)
    assert message in await cyborg_fault(await client.get(PROFILES, headers=headers), 400)


async def test_the_scope_header_alone_is_no_anonymous_admin(aiohttp_client, sqlite_url):
    client = await app_client(aiohttp_client, sqlite_url)
    resp = await client.post(PROFILES, json=profile(), headers={"OpenStack-System-Scope": "all"})
    assert "cyborg:device_profile:create" in await cyborg_fault(resp, 403)


def test_answers_are_cached_apart_per_scope_when_scope_is_enforced():
    """Same roles, other scope: with enforce_scope the answer is not reused between them."""
    roles = with_implied(frozenset({"admin"}))
    system = RequestContext(user_id="sa", project_id=None, roles=roles, system_scope="all")
    project = RequestContext(user_id="pa", project_id="p-a", roles=roles)
    rule = "cyborg:device_profile:create"  # legacy + scope: is_admin for both, only system scope allowed
    for order in ((project, system), (system, project)):
        enforcer = PolicyEnforcer(enforce_scope=True)
        assert [enforcer.allowed(rule, ctx) for ctx in order] == [ctx is system for ctx in order]
    assert PolicyEnforcer(enforce_scope=True).reads("cyborg:arq:get_all") == {"roles", "system_scope"}
    assert PolicyEnforcer().reads("cyborg:arq:get_all") == {"roles"}


# -- item 5: rayborg policy sample ------------------------------------------------------------------

_OPERATION = re.compile(r"^# (GET|POST|PATCH|PUT|DELETE)\s+(/\S*)$")


def parse_sample(text: str) -> tuple[dict[str, str], dict[str, list[tuple[str, str]]]]:
    """(rule -> check string, as oslo.policy loads the uncommented sample; rule -> operations listed
    in the comment above it)."""
    uncommented = "\n".join(line[1:] if line.startswith('#"') else line for line in text.splitlines())
    rules = {name: str(check) for name, check in oslo.Rules.load(uncommented).items()}
    ops: dict[str, list[tuple[str, str]]] = {}
    pending: list[tuple[str, str]] = []
    for line in text.splitlines():
        if match := _OPERATION.match(line):
            pending.append((match[1], match[2]))
        elif line.startswith('#"'):
            ops[line[2:].split('"', 1)[0]] = pending
            pending = []
    return rules, ops


async def guarded_routes(aiohttp_client, sqlite_url, tmp_path) -> dict[str, list[tuple[str, str]]]:
    """What the app itself says: each route of ROUTES asked by a caller every cyborg:* rule refuses,
    the 403 naming the rule it checked."""
    deny = tmp_path / "deny.yaml"
    deny.write_text("".join(f'"{name}": "!"\n' for name, *_ in API_RULES))
    client = await app_client(aiohttp_client, sqlite_url, policy_file=str(deny))
    seen: dict[str, list[tuple[str, str]]] = {}
    for method, path, _ in ROUTES:
        url = re.sub(r"\{\w+\}", str(uuid.uuid4()), path)
        url += "?value=x" if (method, path) == ("DELETE", PROFILES) else ""  # else 400 before the policy
        resp = await client.request(method, url, headers={"X-User-Id": "u", "X-Project-Id": "p"})
        if resp.status == 403:
            rule = (await cyborg_fault(resp, 403)).rsplit(" ", 1)[-1]
            seen.setdefault(rule, []).append((method, path))
    return seen


async def test_policy_sample_loads_back_with_every_default_and_operation(aiohttp_client, sqlite_url, tmp_path,
                                                                         capsys):
    out = tmp_path / "policy.yaml"
    assert main(["policy", "sample", "--output", str(out)]) == 0
    text = out.read_text()
    assert main(["policy", "sample"]) == 0
    assert capsys.readouterr().out == text
    assert all(line.startswith("#") or not line.strip() for line in text.splitlines())  # all commented
    rules, ops = parse_sample(text)
    defaults = {rule.name: rule.check_str for rule in rule_defaults()}
    assert {name: str(oslo._parser.parse_rule(check)) for name, check in defaults.items()} == rules
    guarded = await guarded_routes(aiohttp_client, sqlite_url, tmp_path)
    assert ops == {**{name: [] for name in defaults}, **guarded}
    # The file works as written once a rule is uncommented: a project admin creates profiles again.
    out.write_text(text.replace('#"cyborg:device_profile:create": "rule:system_admin_api"',
                                '"cyborg:device_profile:create": "rule:project_admin_api"'))
    client = await app_client(aiohttp_client, sqlite_url, policy_file=str(out), enforce_new_defaults=True)
    assert (await client.post(PROFILES, json=profile(), headers=PROJECT_ADMIN)).status == 201
    # Each API rule's deprecated default and scope types are documented.
    for name, _check, legacy, scopes, _desc in API_RULES:
        assert f'# "{name}":"{legacy}" has been' in text
        help_block = text.split(f'#"{name}":', 1)[0].rsplit("\n\n", 1)[1]
        assert f"# Intended scope(s): {', '.join(scopes)}" in help_block.splitlines()


def test_policy_sample_to_an_unwritable_file_is_one_line(tmp_path, capsys):
    assert main(["policy", "sample", "--output", str(tmp_path / "no" / "such" / "dir.yaml")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write" in err[0]

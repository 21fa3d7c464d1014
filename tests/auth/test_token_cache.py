"""KeystoneAuth without Keystone: the bounded token cache, token parsing, single-flight validation."""

from __future__ import annotations

import asyncio
import time

from rayborg.api.keystone_auth import KeystoneAuth, TokenCache, TokenInfo, identity_url, parse_token


def info(expires_at: float | None = None) -> TokenInfo:
    return TokenInfo(user_id="u", project_id="p", scope="project", roles=frozenset({"member"}),
                     expires_at=expires_at)


def test_cache_is_bounded_lru():
    cache = TokenCache(ttl=60, size=3)
    for key in "abc":
        cache.put(key, info())
    assert cache.get("a")[0]  # a is now the most recent
    cache.put("d", info())
    assert len(cache) == 3
    assert not cache.get("b")[0] and cache.get("a")[0] and cache.get("d")[0]


def test_cache_never_outlives_the_token_nor_its_ttl():
    cache = TokenCache(ttl=60)
    cache.put("expired", info(expires_at=time.time() - 1))
    assert cache.get("expired") == (False, None)
    cache.put("invalid", None)
    assert cache.get("invalid") == (True, None)  # a rejected token is remembered as rejected
    off = TokenCache(ttl=0)
    off.put("x", info())
    assert off.get("x") == (False, None)


def test_parse_token_scopes_and_roles():
    base = {"user": {"id": "u1"}, "roles": [{"name": "Member"}, {"name": "reader"}],
            "expires_at": "2030-01-01T00:00:00.000000Z"}
    project = parse_token({"token": {**base, "project": {"id": "p1"}}})
    assert project.scope == "project" and project.project_id == "p1"
    assert project.roles == {"member", "reader"} and project.expires_at == 1893456000.0
    system = parse_token({"token": {**base, "system": {"all": True}}})
    assert system.scope == "system" and system.project_id is None
    assert parse_token({"token": {**base, "domain": {"id": "d"}}}).scope == "domain"
    assert parse_token({"token": {"user": {"id": "u"}}}).scope == "unscoped"


def test_identity_url():
    assert identity_url("http://ks:5000") == "http://ks:5000/v3"
    assert identity_url("http://ks:5000/v3/") == "http://ks:5000/v3"


async def test_concurrent_requests_share_one_validation():
    from rayborg.settings import KeystoneOptions, Settings

    settings = Settings(auth_strategy="keystone", _env_file=None,
                        keystone=KeystoneOptions(auth_url="http://127.0.0.1:9/v3", token="t"))
    auth = KeystoneAuth(settings)
    calls = []

    def fake_fetch(token: str):
        calls.append(token)
        time.sleep(0.05)  # a slow Keystone: the others must wait for this call, not start their own
        return info()

    auth._fetch = fake_fetch
    results = await asyncio.gather(*(auth.validate("same") for _ in range(10)))
    assert calls == ["same"] and all(r == info() for r in results)
    await auth.validate("same")
    assert calls == ["same"] and auth.keystone_calls == 1
    await auth.close()

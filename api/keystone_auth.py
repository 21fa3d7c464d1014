"""Keystone authentication: validate `X-Auth-Token` (and `X-Service-Token`) against Keystone.

What keystonemiddleware does for Cyborg, done in-process: each token is checked with
`GET /v3/auth/tokens` (`X-Subject-Token`), authenticated as the service user of `settings.keystone`
through a keystoneauth1 session. keystoneauth1 is synchronous, so the call runs in a worker thread;
validated tokens (and rejected ones: a token never becomes valid later) are cached for
`settings.token_cache_seconds`, never past the token's own expiry, in a bounded LRU. Concurrent
requests with the same uncached token share one Keystone call.

Scope: project- and system-scoped tokens are accepted (the policy-defaults-refresh specs' system
admin and reader); what a system-scoped caller may do is the policy's to say (`enforce_scope`). A
domain-scoped or unscoped token gets 403: no rule is meant for it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web
from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import session as ks_session
from keystoneauth1 import token_endpoint

from rayborg.api.auth import header
from rayborg.api.context import RequestContext, with_implied
from rayborg.api.errors import ApiError, Forbidden, Unauthorized

log = logging.getLogger(__name__)

CACHE_SIZE = 10_000
TIMEOUT_S = 10.0


@dataclass(frozen=True)
class TokenInfo:
    """What a valid token says about its bearer."""

    user_id: str
    project_id: str | None  # None: not project-scoped
    scope: str               # "project", "system", "domain" or "unscoped"
    roles: frozenset[str]
    expires_at: float | None  # epoch seconds


class InvalidToken(Exception):
    """Keystone does not know the token, or it has expired or been revoked."""


class KeystoneUnavailable(ApiError):
    status = 503


def identity_url(auth_url: str) -> str:
    """`http://ks:5000` or `http://ks:5000/v3/` -> `http://ks:5000/v3`."""
    base = auth_url.rstrip("/")
    return base if base.endswith("/v3") else base + "/v3"


def make_service_session(options, timeout: float = TIMEOUT_S) -> ks_session.Session:
    """The service user's session: a password from `options`, or a fixed admin token."""
    if options.auth_url is None:
        raise ValueError("auth_strategy = keystone needs keystone.auth_url")
    if options.username:
        from rayborg.actors.keystone_session import service_session

        return service_session(options.model_dump(), timeout=timeout)
    if options.token:
        return ks_session.Session(auth=token_endpoint.Token(identity_url(options.auth_url), options.token),
                                  timeout=timeout)
    raise ValueError("auth_strategy = keystone needs keystone.username/password (or keystone.token)")


def parse_token(body: dict[str, Any]) -> TokenInfo:
    """The fields we use from Keystone's `GET /v3/auth/tokens` answer."""
    token = body["token"]
    if "project" in token:
        scope = "project"
    elif "system" in token:
        scope = "system"
    elif "domain" in token:
        scope = "domain"
    else:
        scope = "unscoped"
    expires = token.get("expires_at")
    return TokenInfo(
        user_id=token["user"]["id"],
        project_id=token["project"]["id"] if scope == "project" else None,
        scope=scope,
        roles=frozenset(r["name"].lower() for r in token.get("roles", [])),
        expires_at=datetime.fromisoformat(expires).timestamp() if expires else None,
    )


class TokenCache:
    """A bounded LRU of token hash -> (deadline, TokenInfo | None for an invalid token)."""

    def __init__(self, ttl: float, size: int = CACHE_SIZE):
        self.ttl = ttl
        self.size = size
        self._entries: OrderedDict[str, tuple[float, TokenInfo | None]] = OrderedDict()

    def get(self, key: str) -> tuple[bool, TokenInfo | None]:
        """(hit, info); an entry past its deadline is a miss."""
        entry = self._entries.get(key)
        if entry is None:
            return False, None
        deadline, info = entry
        if deadline <= time.time():
            del self._entries[key]
            return False, None
        self._entries.move_to_end(key)
        return True, info

    def put(self, key: str, info: TokenInfo | None) -> None:
        if self.ttl <= 0:
            return
        deadline = time.time() + self.ttl
        if info is not None and info.expires_at is not None:
            deadline = min(deadline, info.expires_at)
        self._entries[key] = (deadline, info)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class KeystoneAuth:
    """The `keystone` auth strategy (see `rayborg.api.auth.make_auth`)."""

    def __init__(self, settings, session: ks_session.Session | None = None, cache_size: int = CACHE_SIZE):
        self.auth_url = identity_url(settings.keystone.auth_url or "")
        self.service_token_roles = frozenset(r.lower() for r in settings.service_token_roles)
        self._session = session or make_service_session(settings.keystone)
        self._cache = TokenCache(settings.token_cache_seconds, cache_size)
        self._inflight: dict[str, asyncio.Task] = {}
        self.keystone_calls = 0  # tokens validated remotely (cache misses), for tests and metrics

    async def identify(self, request: web.Request) -> RequestContext:
        token = header(request, "X-Auth-Token")  # 400 for bytes no token can hold
        if not token:
            raise self._unauthorized("Authentication required: the request has no X-Auth-Token")
        user = await self._require(token, "X-Auth-Token")
        if user.scope not in ("project", "system"):
            raise Forbidden("This API accepts project- or system-scoped tokens only; "
                            f"the token is {user.scope}-scoped")
        service_roles: frozenset[str] = frozenset()
        service_token = header(request, "X-Service-Token")
        if service_token:
            service_roles = (await self._require(service_token, "X-Service-Token")).roles
        return RequestContext(user_id=user.user_id, project_id=user.project_id, roles=with_implied(user.roles),
                              service_roles=service_roles,
                              is_service=bool(service_roles & self.service_token_roles), auth_token=token,
                              system_scope="all" if user.scope == "system" else None)

    async def close(self) -> None:
        self._session.session.close()

    async def _require(self, token: str, header: str) -> TokenInfo:
        info = await self.validate(token)
        if info is None:
            raise self._unauthorized(f"The {header} is invalid, expired or revoked")
        return info

    async def validate(self, token: str) -> TokenInfo | None:
        """The token's identity, or None if Keystone rejects it; cached, one call per token at a time."""
        key = hashlib.sha256(token.encode()).hexdigest()  # never keep bearer tokens in memory as such
        hit, info = self._cache.get(key)
        if hit:
            return info
        task = self._inflight.get(key)
        if task is None:
            # A task of its own, so a client hanging up does not cancel the call others wait on.
            task = asyncio.get_running_loop().create_task(self._fetch_and_cache(key, token))
            self._inflight[key] = task
            task.add_done_callback(lambda t: (self._inflight.pop(key, None), t.cancelled() or t.exception()))
        return await asyncio.shield(task)

    async def _fetch_and_cache(self, key: str, token: str) -> TokenInfo | None:
        self.keystone_calls += 1
        info = await asyncio.to_thread(self._fetch, token)
        self._cache.put(key, info)
        return info

    def _fetch(self, token: str) -> TokenInfo | None:
        """One `GET /v3/auth/tokens` as the service user (worker thread)."""
        try:
            resp = self._session.get(f"{self.auth_url}/auth/tokens", headers={"X-Subject-Token": token},
                                     raise_exc=False, authenticated=True)
        except ks_exc.ClientException as exc:
            log.warning("token validation failed: Keystone at %s: %s", self.auth_url, exc)
            raise KeystoneUnavailable("The identity service is unavailable; try again later") from None
        if resp.status_code == 404:  # unknown, expired or revoked
            return None
        if resp.status_code == 401:  # keystoneauth re-authenticated once already: our credentials are bad
            log.error("token validation: Keystone rejects the service credentials: %s", resp.text[:200])
            raise KeystoneUnavailable("The identity service could not validate the token; try again later")
        if resp.status_code != 200:
            log.warning("token validation: Keystone answered %s: %s", resp.status_code, resp.text[:200])
            raise KeystoneUnavailable("The identity service could not validate the token; try again later")
        return parse_token(resp.json())

    def _unauthorized(self, message: str) -> Unauthorized:
        return Unauthorized(message, headers={"WWW-Authenticate": f'Keystone uri="{self.auth_url}"'})

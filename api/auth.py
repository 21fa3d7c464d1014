"""Authentication strategies: `noauth` (identity from headers) and `keystone` (validated tokens).

Both produce a `RequestContext`. In noauth mode the headers Keystone's middleware would set are
trusted; a request without them acts as an admin *service* of a default project, so that the
embedded default is usable with plain curl and unmodified clients (`X-Auth-Token: notused`).
"""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from rayborg.api.context import DEFAULT_PROJECT_ID, RequestContext, with_implied


def _split_roles(value: str | None) -> frozenset[str]:
    return frozenset(r.strip().lower() for r in (value or "").split(",") if r.strip())


class AuthStrategy(Protocol):
    async def identify(self, request: web.Request) -> RequestContext: ...

    async def close(self) -> None: ...


class NoAuth:
    """Trusts X-User-Id / X-Project-Id / X-Roles / X-Service-Roles."""

    def __init__(self, service_token_roles: list[str]):
        self.service_token_roles = frozenset(r.lower() for r in service_token_roles)

    async def identify(self, request: web.Request) -> RequestContext:
        h = request.headers
        if not any(k in h for k in ("X-User-Id", "X-Project-Id", "X-Roles", "X-Service-Roles")):
            return RequestContext(user_id="admin", project_id=DEFAULT_PROJECT_ID,
                                  roles=frozenset({"admin", "member", "reader", "service"}),
                                  service_roles=frozenset({"service"}), is_service=True)
        roles = with_implied(_split_roles(h.get("X-Roles")))
        service_roles = _split_roles(h.get("X-Service-Roles"))
        return RequestContext(
            user_id=h.get("X-User-Id"), project_id=h.get("X-Project-Id"), roles=roles,
            service_roles=service_roles, is_service=bool(service_roles & self.service_token_roles),
            auth_token=h.get("X-Auth-Token"))

    async def close(self) -> None:
        return None


def make_auth(settings) -> AuthStrategy:
    if settings.auth_strategy == "keystone":
        from rayborg.api.keystone_auth import KeystoneAuth

        return KeystoneAuth(settings)
    return NoAuth(settings.service_token_roles)

"""Authentication strategies: `noauth` (identity from headers) and `keystone` (validated tokens).

Both produce a `RequestContext`. In noauth mode the headers Keystone's middleware would set are
trusted; a request without them acts as an admin *service* of a default project, so that the
embedded default is usable with plain curl and unmodified clients (`X-Auth-Token: notused`).
"""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from rayborg.api.context import DEFAULT_PROJECT_ID, RequestContext, with_implied
from rayborg.api.errors import BadRequest

# OpenStack-System-Scope is what keystonemiddleware sets for a system-scoped token (oslo.context
# reads it too): honoured, as the other headers are, so that a proxy validating tokens in front of
# noauth passes system scope on. It gives nothing X-Roles does not already give a noauth caller.
SYSTEM_SCOPE_HEADER = "OpenStack-System-Scope"
IDENTITY_HEADERS = ("X-User-Id", "X-Project-Id", "X-Roles", "X-Service-Roles", SYSTEM_SCOPE_HEADER)
MAX_ID_LENGTH = 255  # the database's project_id columns


def header(request: web.Request, name: str, max_length: int | None = None) -> str | None:
    """A header the caller's identity comes from; None when absent or blank. 400 when it is not
    printable UTF-8: aiohttp hands undecodable bytes on as surrogates, which no database (nor
    Keystone) accepts, and control characters have no place in an id, a role or a token."""
    value = request.headers.get(name)
    if not value:
        return None
    if not value.isprintable():  # also False for surrogates: one C-level scan, no encoding
        raise BadRequest(f"The {name} header must be printable UTF-8 text")
    if max_length is not None and len(value) > max_length:
        raise BadRequest(f"The {name} header is longer than {max_length} characters")
    return value


def _split_roles(value: str | None) -> frozenset[str]:
    return frozenset(r.strip().lower() for r in (value or "").split(",") if r.strip())


def _system_scope(request: web.Request, project_id: str | None) -> str | None:
    scope = header(request, SYSTEM_SCOPE_HEADER)
    if scope is None:
        return None
    if scope != "all":
        raise BadRequest(f"The {SYSTEM_SCOPE_HEADER} header must be 'all' (Keystone's only system scope)")
    if project_id is not None:
        raise BadRequest(f"A caller is either system-scoped ({SYSTEM_SCOPE_HEADER}) or of a project "
                         "(X-Project-Id), never both")
    return scope


class AuthStrategy(Protocol):
    async def identify(self, request: web.Request) -> RequestContext: ...

    async def close(self) -> None: ...


# What a noauth context is made of: the identity headers and the token (an equal tuple gives an equal
# context, so contexts are remembered by it).
_CONTEXT_HEADERS = (*IDENTITY_HEADERS, "X-Auth-Token")
_DEFAULT_CONTEXT = RequestContext(user_id="admin", project_id=DEFAULT_PROJECT_ID,
                                  roles=frozenset({"admin", "member", "reader", "service"}),
                                  service_roles=frozenset({"service"}), is_service=True)


class NoAuth:
    """Trusts X-User-Id / X-Project-Id / X-Roles / X-Service-Roles."""

    CACHE_SIZE = 1024  # distinct callers remembered (then forgotten all at once)

    def __init__(self, service_token_roles: list[str]):
        self.service_token_roles = frozenset(r.lower() for r in service_token_roles)
        self._known: dict[tuple, RequestContext] = {}

    async def identify(self, request: web.Request) -> RequestContext:
        """The caller's context. Callers send the same few header values over and over: a context
        is a pure function of them (RequestContext is frozen), so it is made once per distinct
        values and then looked up (about 4 us saved a request); refusals (400) are never kept."""
        h = request.headers
        get = h.get
        key = tuple(get(k) for k in _CONTEXT_HEADERS)
        found = self._known.get(key)
        if found is None:
            found = self._identify(request)
            if len(self._known) >= self.CACHE_SIZE:
                self._known.clear()
            self._known[key] = found
        return found

    def _identify(self, request: web.Request) -> RequestContext:
        h = request.headers
        if not any(k in h for k in IDENTITY_HEADERS):
            return _DEFAULT_CONTEXT
        # Identity headers given: a missing or blank X-Project-Id is no project (not every project).
        roles = with_implied(_split_roles(header(request, "X-Roles")))
        service_roles = _split_roles(header(request, "X-Service-Roles"))
        project_id = header(request, "X-Project-Id", MAX_ID_LENGTH)
        return RequestContext(
            user_id=header(request, "X-User-Id", MAX_ID_LENGTH), project_id=project_id, roles=roles,
            service_roles=service_roles, is_service=bool(service_roles & self.service_token_roles),
            auth_token=header(request, "X-Auth-Token"), system_scope=_system_scope(request, project_id))

    async def close(self) -> None:
        return None


def make_auth(settings) -> AuthStrategy:
    if settings.auth_strategy == "keystone":
        from rayborg.api.keystone_auth import KeystoneAuth

        return KeystoneAuth(settings)
    return NoAuth(settings.service_token_roles)

"""Small request/response helpers every handler uses: identity, policy, JSON in and out, queries."""

from __future__ import annotations

import re
import uuid as uuidlib
from datetime import datetime, timezone
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from rayborg.api.app_keys import POLICY, SETTINGS, STORE
from rayborg.api.context import RequestContext
from rayborg.api.errors import (ApiError, BadRequest, Conflict, Forbidden, Locked, NotFound,
                                 UnsupportedMediaType)
from rayborg.store.arq_state import AmountLimits
from rayborg.store.errors import (ConflictError, InvalidError, LockedError, NotFoundError, QuotaExceeded,
                                  ServiceTokenRequired, StoreError)

# Accepted everywhere for openstacksdk's pagination (it sends them only when a caller asks for a page).
PAGING_PARAMS = frozenset({"limit", "marker"})


def ctx(request: web.Request) -> RequestContext:
    return request["ctx"]


def version(request: web.Request) -> tuple[int, int]:
    return request["version"]


def store(request: web.Request):
    return request.app[STORE]


def authorize(request: web.Request, rule: str) -> RequestContext:
    """Enforce a policy rule for the caller (403 naming the rule) and return the caller."""
    context = ctx(request)
    request.app[POLICY].authorize(rule, context)
    return context


def amount_limits(request: web.Request) -> AmountLimits:
    """The operator's bounds on the resource amounts of a device profile (settings)."""
    settings = request.app[SETTINGS]
    return AmountLimits(per_group=settings.max_group_amount, per_profile=settings.max_profile_amount)


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def empty_response(status: int) -> web.Response:
    return web.Response(status=status)


async def read_json(request: web.Request) -> Any:
    """The parsed body; 415 for a non-JSON content type, 400 for an empty or malformed body."""
    ctype = request.headers.get("Content-Type")
    if ctype is not None and request.content_type not in ("application/json", "application/octet-stream",
                                                          "text/plain", ""):
        if not request.content_type.endswith("+json"):
            raise UnsupportedMediaType(f"Unsupported Content-Type {request.content_type!r}: "
                                       "the API accepts application/json only")
    raw = await request.read()
    if not raw.strip():
        raise BadRequest("The request body is empty: a JSON document is required")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc}") from None
    if b"\\u0000" in raw and _has_nul(body):
        raise BadRequest("The request body must not contain NUL characters")
    return body


def _has_nul(value: Any) -> bool:
    """NUL cannot be stored by PostgreSQL (SQLite can): refuse it on both alike, as a 400."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def query_params(request: web.Request, allowed: frozenset[str] | set[str]) -> dict[str, str]:
    """Query parameters, 400 `Unknown argument` for anything not allowed (as Cyborg's WSME does)."""
    out: dict[str, str] = {}
    for key, value in request.query.items():
        if "\x00" in key or "\x00" in value:
            raise BadRequest(f'Argument "{key}" must not contain NUL characters')
        if key not in allowed and key not in PAGING_PARAMS:
            raise BadRequest(f'Unknown argument: "{key}"')
        if key in out:
            raise BadRequest(f'Argument "{key}" given more than once')
        out[key] = value
    return out


def paginate(items: list[dict], params: dict[str, str], id_key: str = "uuid") -> list[dict]:
    """Honour openstacksdk's `limit`/`marker`: items after the marker, at most `limit` of them."""
    if "marker" in params:
        marker = params["marker"]
        for i, item in enumerate(items):
            if item.get(id_key) == marker:
                items = items[i + 1:]
                break
        else:
            raise BadRequest(f"Marker {marker} not found")
    if "limit" in params:
        try:
            limit = int(params["limit"])
        except ValueError:
            raise BadRequest(f"limit must be an integer, got {params['limit']!r}") from None
        if limit < 0:
            raise BadRequest("limit must not be negative")
        items = items[:limit]
    return items


# A UUID already in its canonical form (lower-case 8-4-4-4-12), as clients send them: taken as it is.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}").fullmatch


def parse_uuid(value: str, what: str = "uuid") -> str:
    """A canonical lower-case 8-4-4-4-12 UUID, or 400."""
    if type(value) is str and _CANONICAL_UUID(value) is not None:
        return value  # what str(uuid.UUID(value)) would give, at a tenth of its cost
    if not is_uuid(value):
        raise BadRequest(f"Invalid {what}: {value!r} is not a valid UUID")
    return str(uuidlib.UUID(value))


def is_uuid(value: Any) -> bool:
    if not isinstance(value, str) or len(value) != 36:
        return False
    try:
        uuidlib.UUID(value)
    except ValueError:
        return False
    return True


def iso(dt: datetime | str | None) -> str | None:
    """ISO 8601 with offset and whole seconds, as Cyborg prints (`2020-03-13T02:26:31+00:00`); text
    passes as it is (the store's prepared reads give it already so: `Prepared(iso_datetimes=True)`)."""
    if dt is None or type(dt) is str:
        return dt
    if dt.tzinfo is None:  # SQLite hands back naive datetimes; the store writes UTC only
        return dt.isoformat(timespec="seconds") + "+00:00"
    return dt.astimezone(timezone.utc).isoformat(timespec="seconds")


_STORE_ERRORS: list[tuple[type[StoreError], type[ApiError]]] = [
    (NotFoundError, NotFound), (ConflictError, Conflict), (InvalidError, BadRequest),
    (ServiceTokenRequired, Forbidden), (LockedError, Locked), (QuotaExceeded, Forbidden)]


async def call_store(request: web.Request, fn: Callable[..., Any], *args, write: bool = False,
                     **kwargs) -> Any:
    """Run a store function off the event loop (in a write transaction if `write`, shared with the
    other requests' writes queued meanwhile: `Store.agroup_transact`), turning the store's
    refusals into API errors."""
    s = store(request)
    try:
        if write:
            return await s.agroup_transact(fn, *args, **kwargs)
        return await s.aquery(fn, *args, **kwargs)
    except StoreError as exc:
        for store_error, api_error in _STORE_ERRORS:
            if isinstance(exc, store_error):
                raise api_error(str(exc)) from None
        raise


def split_list(value: str) -> list[str]:
    """`a, b,,c` -> ['a', 'b', 'c']."""
    return [part.strip() for part in value.split(",") if part.strip()]

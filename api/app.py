"""The aiohttp front door: the one route table and the middlewares every request passes through."""

from __future__ import annotations

import logging
import random
import time

from aiohttp import web

from rayborg.actors import metrics
from rayborg.api import microversion
from rayborg.api.app_keys import AUTH, BINDER, POLICY, ROUTE_TABLE, SETTINGS, STORE
from rayborg.api.auth import make_auth
from rayborg.api.errors import ApiError, BadRequest, error_response
from rayborg.api.handlers import (accelerator_requests, attributes, deployables, device_profiles, devices,
                                  metrics as metrics_handler, quotas, root)
from rayborg.api.policy import PolicyEnforcer

log = logging.getLogger(__name__)

# Also served under this prefix, where Nova's deployments usually mount the service, so that
# `http://host:6666/accelerator` works without a reverse proxy.
MOUNT_PREFIXES = ("", "/accelerator")
PUBLIC_PATHS = frozenset({"/", "/v2", "/v2/openapi.json", "/metrics"})  # /metrics: see metrics_public

# The whole API at a glance: (method, path, handler).
ROUTES: list[tuple[str, str, object]] = [
    ("GET", "/", root.versions),
    ("GET", "/v2", root.v2_version),
    ("GET", "/v2/openapi.json", root.openapi_document),
    ("GET", "/v2/device_profiles", device_profiles.list_profiles),
    ("POST", "/v2/device_profiles", device_profiles.create_profile),
    ("DELETE", "/v2/device_profiles", device_profiles.delete_profiles_by_query),
    ("GET", "/v2/device_profiles/{name_or_uuid}", device_profiles.show_profile),
    ("DELETE", "/v2/device_profiles/{names_or_uuid}", device_profiles.delete_profiles),
    ("GET", "/v2/accelerator_requests", accelerator_requests.list_arqs),
    ("POST", "/v2/accelerator_requests", accelerator_requests.create_arqs),
    ("PATCH", "/v2/accelerator_requests", accelerator_requests.bind_unbind),
    ("DELETE", "/v2/accelerator_requests", accelerator_requests.delete_arqs),
    ("GET", "/v2/accelerator_requests/{uuid}", accelerator_requests.show_arq),
    ("PATCH", "/v2/accelerator_requests/{uuid}", accelerator_requests.bind_unbind_one),
    ("DELETE", "/v2/accelerator_requests/{uuid}", accelerator_requests.delete_arq),
    ("GET", "/v2/devices", devices.list_devices),
    ("GET", "/v2/devices/{uuid}", devices.show_device),
    ("POST", "/v2/devices/{uuid}/enable", devices.enable_device),
    ("POST", "/v2/devices/{uuid}/disable", devices.disable_device),
    ("GET", "/v2/deployables", deployables.list_deployables),
    ("GET", "/v2/deployables/{uuid}", deployables.show_deployable),
    ("PATCH", "/v2/deployables/{uuid}/program", deployables.program_deployable),
    # openstacksdk's patch_deployable repeats the id; accept it rather than answer 405.
    ("PATCH", "/v2/deployables/{uuid}/program/{uuid2}", deployables.program_deployable),
    ("GET", "/v2/attributes", attributes.list_attributes),
    ("POST", "/v2/attributes", attributes.create_attribute),
    ("GET", "/v2/attributes/{uuid}", attributes.show_attribute),
    ("DELETE", "/v2/attributes/{uuid}", attributes.delete_attribute),
    # The 2023.1 attribute API, per deployable (singular, as the spec writes it; plural as an alias).
    *((method, f"/v2/{dep}/{{uuid}}/{attr}{tail}", handler)
      for dep, attr in (("deployable", "attribute"), ("deployables", "attributes"))
      for method, tail, handler in (
          ("GET", "", attributes.list_deployable_attributes),
          ("POST", "", attributes.create_deployable_attributes),
          ("DELETE", "", attributes.delete_deployable_attributes),
          ("GET", "/{uuid_or_key}", attributes.show_deployable_attribute),
          ("PUT", "/{uuid_or_key}", attributes.update_deployable_attribute),
          ("DELETE", "/{uuid_or_key}", attributes.delete_deployable_attribute))),
    ("GET", "/v2/quotas/usage", quotas.show_usage),
    ("GET", "/metrics", metrics_handler.get_metrics),
]


def _route_path(request: web.Request) -> str:
    """The route's path without the mount prefix, e.g. `/v2/devices/{uuid}`."""
    info = request.match_info
    resource = info.route.resource if info.route is not None else None
    path = resource.canonical if resource is not None else request.path
    prefix = request.get("prefix", "")
    return path[len(prefix):] or "/" if prefix else path


def _metric_route(request: web.Request) -> str:
    """The route's pattern for metric labels; one label for every unmatched path, so that random
    URLs cannot grow the label set."""
    route = request.match_info.route
    if route is None or route.resource is None:
        return "unmatched"
    return _route_path(request)


_VERSION_4_MASK = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_VERSION_4_BITS = (0x4000 << 64) | (0x8000 << 48)


def _request_id() -> str:
    """`req-` and a random (version 4) UUID, as Cyborg's request ids: formatted from 128 random bits
    directly. An id only tells requests apart in logs: Python's own generator (seeded from the OS,
    reseeded in each forked front door) serves, without a system call per request."""
    h = f"{(random.getrandbits(128) & _VERSION_4_MASK) | _VERSION_4_BITS:032x}"
    return f"req-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class _RouteFacts:
    """What the middleware needs to know of a matched route, worked out at its first request: its
    path without the mount prefix, the label for metrics, whether it is under /v2, whether it is
    public. Per resource object: the route table is fixed once the app runs."""

    __slots__ = ("metric", "versioned", "public")

    def __init__(self, path: str, matched: bool):
        self.metric = path if matched else "unmatched"
        self.versioned = path.startswith("/v2")
        self.public = path in PUBLIC_PATHS


def _route_facts(request: web.Request, prefix: str, known: dict) -> _RouteFacts:
    route = request.match_info.route
    resource = route.resource if route is not None else None
    if resource is None:  # unmatched (404/405): by the request's own path, and not cached
        path = request.path
        return _RouteFacts(path[len(prefix):] or "/" if prefix else path, False)
    facts = known.get(resource)
    if facts is None:  # each resource is of one mount prefix (the routes are added per prefix)
        path = resource.canonical
        facts = known[resource] = _RouteFacts(path[len(prefix):] or "/" if prefix else path, True)
    return facts


def _mount_prefix(path: str) -> str:
    for p in MOUNT_PREFIXES[1:]:
        if path.startswith(p) and (len(path) == len(p) or path[len(p)] == "/"):
            return p
    return ""


def _error(request: web.Request, exc: BaseException) -> web.Response:
    """Every failure leaves in Cyborg's envelope (the microversion headers are added by the caller)."""
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.message, exc.headers)
    if isinstance(exc, web.RequestPayloadError):  # a body that does not decode (bad Content-Encoding)
        detail = getattr(exc.__cause__, "message", None) or str(exc)
        resp = error_response(400, f"The request body could not be read: {detail}")
        # End the body (aiohttp would linger on it and log a traceback) and, after this answer, the
        # connection: its stream is past trusting.
        request.content.feed_eof()
        resp.force_close()
        return resp
    if isinstance(exc, ConnectionResetError):  # the client hung up mid-request: nobody to answer
        log.debug("client left during %s %s (%s)", request.method, request.path, request.get("request_id"))
        resp = error_response(400, "The client closed the connection before the request was read.")
        resp.force_close()
        return resp
    if isinstance(exc, web.HTTPException):  # >= 400 only: the caller re-raises redirects
        message = {404: "The resource could not be found.",
                   405: f"The method {request.method} is not allowed for this resource.",
                   413: "The request body is too large."}.get(exc.status, exc.reason)
        resp = error_response(exc.status, message)
        if exc.status == 405 and "Allow" in exc.headers:
            resp.headers["Allow"] = exc.headers["Allow"]
        return resp
    log.error("unexpected error on %s %s (%s)", request.method, request.path, request.get("request_id"),
              exc_info=exc)
    return error_response(500, "An unexpected error prevented the server from fulfilling the request.")


def make_front_door():
    """The front door's one middleware, with its own cache of route facts (one per app)."""
    known: dict[object, _RouteFacts] = {}

    @web.middleware
    async def front_door_middleware(request: web.Request, handler):
        return await _front_door(request, handler, known)

    return front_door_middleware


async def _front_door(request: web.Request, handler, known: dict) -> web.StreamResponse:
    """The one middleware every request passes through (one layer: each aiohttp middleware costs a
    coroutine and a wrapper per request). In order:

    - a request id (`x-openstack-request-id` on every answer) and the mount prefix;
    - for everything under /v2 (but its document): microversion negotiation and authentication;
    - the handler; every failure leaves in Cyborg's envelope (`_error`), with the microversion
      headers once a version was negotiated; redirects and other non-error HTTPExceptions pass;
    - the request's count and latency for GET /metrics (`metrics.api_request`)."""
    started = time.perf_counter()
    request_id = _request_id()
    request["request_id"] = request_id
    path = request.path
    prefix = request["prefix"] = _mount_prefix(path)
    facts = _route_facts(request, prefix, known)
    version = None
    try:
        try:
            if "\x00" in path:
                raise BadRequest("The path must not contain NUL characters")
            if facts.versioned:
                version = request["version"] = microversion.negotiate(request.headers)
            if not facts.public:
                request["ctx"] = await request.app[AUTH].identify(request)
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = _error(request, exc)
        except Exception as exc:  # noqa: BLE001 - the envelope for every failure
            response = _error(request, exc)
    except web.HTTPException as exc:  # redirects and the like
        metrics.api_request(facts.metric, request.method, exc.status, time.perf_counter() - started)
        raise
    except BaseException:
        metrics.api_request(facts.metric, request.method, 500, time.perf_counter() - started)
        raise
    headers = response.headers
    if version is not None:
        headers.update(microversion.response_headers(version))
    headers["x-openstack-request-id"] = request_id
    metrics.api_request(facts.metric, request.method, response.status, time.perf_counter() - started)
    return response


def create_app(settings, store, binder=None) -> web.Application:
    """The front door for one process: routes, middlewares, auth and policy from `settings`.

    `binder` finishes binds in the background: the in-process `LocalBinder` by default, the Ray
    binder pool when `rayborg serve` runs the actors."""
    app = web.Application(client_max_size=settings.max_body_bytes,
                          middlewares=[make_front_door()])
    app[SETTINGS] = settings
    app[STORE] = store
    app[POLICY] = PolicyEnforcer(settings.policy_file, settings.enforce_new_defaults, settings.enforce_scope)
    app[AUTH] = make_auth(settings)
    app[ROUTE_TABLE] = ROUTES
    if binder is None:
        from rayborg.api.local_binder import LocalBinder

        binder = LocalBinder(store)

        async def _resume_binds(app: web.Application) -> None:  # binds a previous process left
            await app[BINDER].start()

        app.on_startup.append(_resume_binds)
    app[BINDER] = binder
    # One resource per path with all its methods (aiohttp reuses a resource only for consecutive
    # routes of one path): a request is matched against the fewest resources.
    by_path: dict[str, list[tuple[str, object]]] = {}
    for prefix in MOUNT_PREFIXES:
        for method, path, handler in ROUTES:
            full = (prefix + path) if path != "/" else (prefix or "/")
            by_path.setdefault(full, []).append((method, handler))
            if full != "/":
                by_path.setdefault(full + "/", []).append((method, handler))
    for full, methods in by_path.items():
        resource = app.router.add_resource(full)
        for method, handler in methods:
            resource.add_route(method, handler)

    async def _close(app: web.Application) -> None:
        await app[AUTH].close()
        await app[BINDER].close()

    app.on_cleanup.append(_close)
    return app

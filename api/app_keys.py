"""The front door's application state, as typed `web.AppKey`s: one name per thing the app holds, so a
handler reads `request.app[STORE]` with its type and a misspelt key fails at import, not per request."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from ray.actor import ActorHandle

    from rayborg.api.auth import AuthStrategy
    from rayborg.api.local_binder import LocalBinder
    from rayborg.api.policy import PolicyEnforcer
    from rayborg.api.ray_binder import RayBinder
    from rayborg.api.ray_programmer import RayProgrammer
    from rayborg.actor_runtime import Runtime, StartingRuntime
    from rayborg.settings import Settings
    from rayborg.store.engine import Store

SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
STORE: web.AppKey[Store] = web.AppKey("store")
POLICY: web.AppKey[PolicyEnforcer] = web.AppKey("policy")
AUTH: web.AppKey[AuthStrategy] = web.AppKey("auth")
ROUTE_TABLE: web.AppKey[list[tuple[str, str, Any]]] = web.AppKey("routes")
BINDER: web.AppKey[LocalBinder | RayBinder] = web.AppKey("binder")  # finishes binds in the background
OPENAPI: web.AppKey[dict[str, Any]] = web.AppKey("openapi")  # the document, built at its first request
# Set by `rayborg serve` when it runs the actors (absent with --no-actors and in API tests):
PLACEMENT_SYNC: web.AppKey[ActorHandle] = web.AppKey("placement_sync")
PROGRAMMER: web.AppKey[RayProgrammer] = web.AppKey("programmer")
RUNTIME: web.AppKey[Runtime | StartingRuntime] = web.AppKey("runtime")

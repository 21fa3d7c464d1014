"""/v2/quotas/usage: what a project holds per resource class (used, reserved) and its limits.

Limits come from the `[quota]` settings table, or in keystone mode with `[unified_limits] enabled`
from Keystone's unified limits (`api/quota_limits.py`); the bind PATCH enforces them
(`store/quotas.py`)."""

from __future__ import annotations

from aiohttp import web

from rayborg.api import quota_limits
from rayborg.api.app_keys import SETTINGS
from rayborg.api.errors import Forbidden
from rayborg.api.http import authorize, call_store, json_response, query_params
from rayborg.api.openapi_meta import operation
from rayborg.api.schemas import quotas as schemas
from rayborg.store import quotas

TAGS = ["quotas"]


def limits(request: web.Request) -> quotas.Limits:
    """The limits a bind is checked against."""
    return quota_limits.limits(request.app, request.app[SETTINGS])


@operation(summary="Show quota usage and limits per resource class", query=schemas.QuotaUsageQuery,
           responses={200: schemas.QuotaUsageList}, tags=TAGS)
async def show_usage(request: web.Request) -> web.Response:
    """A project sees its own usage; an admin any project's with ?project_id=, every project's without."""
    params = query_params(request, {"project_id"})
    context = authorize(request, "cyborg:quota:get")
    project = params.get("project_id")
    if not context.is_admin:
        if context.project_id is None:
            raise Forbidden("The caller has no project: send X-Project-Id (or a project-scoped token)")
        if project not in (None, context.project_id):
            raise Forbidden("Only an admin may read another project's quota usage")
        project = context.project_id
    return json_response({"quota_usages": await call_store(request, quotas.report, limits(request), project)})

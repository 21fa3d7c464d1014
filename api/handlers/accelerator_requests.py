"""/v2/accelerator_requests: create from a profile, list/show, bind/unbind (PATCH), delete.

Binds are asynchronous: the PATCH moves the ARQs to BindStarted and hands them to the binder
(`app[BINDER]`), which claims the attach handles; the answer is 202 at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from rayborg.api import microversion
from rayborg.api.app_keys import BINDER
from rayborg.api.context import RequestContext
from rayborg.api.handlers import quotas
from rayborg.api.errors import BadRequest, Forbidden, NotFound
from rayborg.api.http import (amount_limits, authorize, call_store, empty_response, iso, json_response,
                              paginate, parse_uuid, query_params, read_json, split_list, version)
from rayborg.api.links import self_link
from rayborg.api.openapi_meta import operation
from rayborg.api.schemas import accelerator_requests as schemas
from rayborg.api.schemas.common import validated
from rayborg.store import arq_state, bind_plan
from rayborg.store.queries import accelerator_requests as queries
from rayborg.store.queries.accelerator_requests import ARQView

TAGS = ["accelerator_requests"]
SERVICE_TOKEN_REQUIRED = ("This operation requires a service token. Use the Compute API to manage instance "
                          "accelerators.")
NO_PROJECT = ("The caller has no project: accelerator requests belong to projects; send X-Project-Id "
              "(or a project-scoped token)")


def _scope(context: RequestContext) -> str | None:
    """The project whose ARQs the caller sees and changes; None (every project) for admins only. A
    non-admin without a project is refused: no project is not every project."""
    if context.is_admin:
        return None
    if context.project_id is None:
        raise Forbidden(NO_PROJECT)
    return context.project_id


def _body(request: web.Request, view: ARQView) -> dict:
    """The response item (schemas.AcceleratorRequest, built as a plain dict: lists of 1,000 ARQs are
    the hot path, where a model per item would cost more than the query)."""
    return {
        "uuid": view.uuid, "state": view.state, "device_profile_name": view.device_profile_name,
        "device_profile_group_id": view.device_profile_group_id, "hostname": view.hostname,
        "device_rp_uuid": view.device_rp_uuid, "instance_uuid": view.instance_uuid,
        "project_id": view.project_id, "attach_handle_type": view.attach_handle_type,
        "attach_handle_uuid": view.attach_handle_uuid, "attach_handle_info": view.attach_handle_info,
        "created_at": iso(view.created_at), "updated_at": iso(view.updated_at),
        "links": self_link(request, "accelerator_requests", view.uuid),
    }


@operation(summary="Create the accelerator requests of a device profile", body=schemas.ARQCreate,
           responses={201: schemas.ARQList}, tags=TAGS)
async def create_arqs(request: web.Request) -> web.Response:
    context = authorize(request, "cyborg:arq:create")
    query_params(request, set())
    _scope(context)  # a non-admin creates in its own project only
    spec = validated(schemas.ARQCreate, await read_json(request))
    arqs = await call_store(request, queries.create, spec.device_profile_name, context.project_id,
                            amount_limits(request), write=True)
    return json_response({"arqs": [_body(request, a) for a in arqs]}, status=201)


@operation(summary="List accelerator requests", query=schemas.ListQuery, responses={200: schemas.ARQList},
           tags=TAGS)
async def list_arqs(request: web.Request) -> web.Response:
    params = query_params(request, {"instance", "bind_state"})
    context = authorize(request, "cyborg:arq:get_all")
    instance = parse_uuid(params["instance"], "instance uuid") if "instance" in params else None
    bind_state = params.get("bind_state")
    if bind_state is not None and bind_state != "resolved":
        raise BadRequest(f"Invalid bind_state {bind_state!r}: only 'resolved' is supported")
    arqs = await call_store(request, queries.list_arqs, _scope(context), instance, bind_state is not None)
    return json_response({"arqs": paginate([_body(request, a) for a in arqs], params)})


@operation(summary="Show an accelerator request", responses={200: schemas.AcceleratorRequest}, tags=TAGS)
async def show_arq(request: web.Request) -> web.Response:
    query_params(request, set())
    context = authorize(request, "cyborg:arq:get_one")
    arq_uuid = parse_uuid(request.match_info["uuid"], "accelerator request uuid")
    arq = await call_store(request, queries.get_arq, arq_uuid, _scope(context))
    return json_response(_body(request, arq))


async def _patch(request: web.Request, body_of: Callable[[Any], Any]) -> web.Response:
    """Bind or unbind: policy, service token, validation of every ARQ, then one transaction."""
    context = authorize(request, "cyborg:arq:update")
    query_params(request, set())
    if not context.is_service:
        raise Forbidden(SERVICE_TOKEN_REQUIRED)
    patch = schemas.parse_patch(body_of(await read_json(request)))
    if not patch.bind:
        held = await call_store(request, bind_plan.unbind_releasing, list(patch.fields), _scope(context),
                                write=True)
        await request.app[BINDER].released(held)
        return empty_response(202)
    if patch.sets_project:
        microversion.require(version(request), microversion.PROJECT_ID_IN_BIND)
        if not context.is_admin:
            raise Forbidden("Only an admin may set project_id when binding accelerator requests")
    # No /device_rp_uuid (and maybe no /hostname): a standalone bind, start_bind chooses the device
    # in the same transaction (409 when nothing matches) and the binder goes on as for Nova's binds.
    targets = {arq_uuid: arq_state.BindTarget(**{"project_id": context.project_id, "hostname": None,
                                                 "device_rp_uuid": None, **fields})
               for arq_uuid, fields in patch.fields.items()}
    started = await call_store(request, arq_state.start_bind, targets, _scope(context), quota=quotas.limits(request),
                               write=True)
    await request.app[BINDER].submit(started, {u: targets[u].instance_uuid for u in started})
    return empty_response(202)


@operation(summary="Bind or unbind accelerator requests (uuid -> JSON-Patch operations)",
           body=schemas.BindBody, responses={202: None}, tags=TAGS)
async def bind_unbind(request: web.Request) -> web.Response:
    """Bind (`add` of /hostname, /device_rp_uuid, /instance_uuid, as Nova sends) or unbind (`remove`)
    accelerator requests; 202, the binds finish in the background (Bound or BindFailed).

    Standalone allocation without Nova (rayborg extension): a bind may leave out /device_rp_uuid
    (only /hostname and /instance_uuid: rayborg chooses a free deployable matching each ARQ's
    device-profile group - resource class, required and forbidden traits - on that host) or both
    /hostname and /device_rp_uuid (any host). Only enabled devices on hosts that are up, with an
    attach handle not already claimed or promised to another bind, are chosen; all ARQs of the
    request or none: 409 naming the ARQ, resource class, traits and host when one cannot be placed.
    /instance_uuid (the consumer) is always required; with Placement configured the chosen devices
    are allocated there to that consumer before the ARQ is Bound, and given back on unbind/delete."""
    return await _patch(request, lambda body: body)


@operation(summary="Bind or unbind one accelerator request (openstacksdk's form)", body=schemas.BindBody,
           responses={202: None}, tags=TAGS)
async def bind_unbind_one(request: web.Request) -> web.Response:
    """Bind or unbind the accelerator request in the path; the body is a bare operation list or an
    object with that one uuid. Standalone binds (without /device_rp_uuid, and maybe /hostname) work
    as for PATCH /v2/accelerator_requests."""
    arq_uuid = parse_uuid(request.match_info["uuid"], "accelerator request uuid")

    def only_this(body):
        if isinstance(body, list):  # a bare operation list for the ARQ in the path
            return {arq_uuid: body}
        if isinstance(body, dict) and any(parse_uuid(key, "ARQ uuid") != arq_uuid for key in body):
            raise BadRequest(f"The body may only patch the accelerator request in the path, {arq_uuid}")
        return body

    return await _patch(request, only_this)


async def _delete(request: web.Request, context: RequestContext, *, arq_uuids: list[str] | None = None,
                  instance: str | None = None) -> web.Response:
    held, missing = await call_store(request, bind_plan.delete_releasing, arq_uuids, instance, _scope(context),
                                     context.is_service, write=True)
    await request.app[BINDER].released(held)
    if missing:  # not idempotent, as in Cyborg: the others are gone, but say what was not there
        raise NotFound(f"Accelerator request not found: {', '.join(missing)}")
    return empty_response(204)


@operation(summary="Delete accelerator requests by ?arqs= or ?instance=", query=schemas.DeleteQuery,
           responses={204: None}, tags=TAGS)
async def delete_arqs(request: web.Request) -> web.Response:
    params = query_params(request, {"arqs", "instance"})
    context = authorize(request, "cyborg:arq:delete")
    given = [key for key in ("arqs", "instance") if key in params]
    if len(given) != 1:
        raise BadRequest("Give exactly one of the query parameters arqs and instance")
    if "instance" in params:
        instance = parse_uuid(params["instance"], "instance uuid")
        if not context.is_service:
            raise Forbidden(SERVICE_TOKEN_REQUIRED)
        return await _delete(request, context, instance=instance)
    arq_uuids = [parse_uuid(u, "accelerator request uuid") for u in split_list(params["arqs"])]
    if not arq_uuids:
        raise BadRequest("No accelerator request uuid given in arqs")
    return await _delete(request, context, arq_uuids=arq_uuids)


@operation(summary="Delete one accelerator request (openstacksdk's form)", responses={204: None}, tags=TAGS)
async def delete_arq(request: web.Request) -> web.Response:
    query_params(request, set())
    context = authorize(request, "cyborg:arq:delete")
    arq_uuid = parse_uuid(request.match_info["uuid"], "accelerator request uuid")
    return await _delete(request, context, arq_uuids=[arq_uuid])

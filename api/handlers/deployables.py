"""/v2/deployables: list, show, and PATCH .../program to load a bitstream."""

from __future__ import annotations

import asyncio
import json

import jsonpatch
import jsonpointer
from aiohttp import web

from rayborg.api.app_keys import PROGRAMMER, SETTINGS
from rayborg.api.errors import ApiError, BadRequest
from rayborg.api.http import (
    authorize,
    call_store,
    ctx,
    iso,
    json_response,
    paginate,
    parse_uuid,
    query_params,
    read_json,
)
from rayborg.api.links import bookmark_links
from rayborg.api.openapi_meta import operation
from rayborg.api.schemas import deployables as schemas
from rayborg.api.schemas.common import validated
from rayborg.store.queries import deployables as queries
from rayborg.store.queries import program_requests
from rayborg.store.queries.deployables import DeployableView

TAGS = ["deployables"]
# How often the PATCH .../program looks whether its request has ended: first soon (a fast tool),
# then at most every POLL_MAX seconds (a full FPGA image takes tens of seconds).
POLL_FIRST, POLL_MAX = 0.02, 0.5


def _body(request: web.Request, view: DeployableView) -> dict:
    dep, program = view.deployable, view.program
    return schemas.Deployable(
        uuid=dep.uuid, parent_id=dep.parent_id, root_id=dep.root_id, name=dep.name,
        num_accelerators=dep.num_accelerators, device_id=dep.device_id,
        attributes_list=json.dumps([{a.key: a.value} for a in view.attributes]), rp_uuid=dep.rp_uuid,
        driver_name=dep.driver_name, bitstream_id=dep.bitstream_id, created_at=iso(dep.created_at),
        updated_at=iso(dep.updated_at), links=bookmark_links(request, "deployables", dep.uuid),
        program_status=program and program.state, program_image_uuid=program and program.image_uuid,
        program_error=program and program.error,
    ).model_dump(mode="json")


@operation(summary="List deployables", responses={200: schemas.DeployableList}, tags=TAGS)
async def list_deployables(request: web.Request) -> web.Response:
    params = query_params(request, set())
    authorize(request, "cyborg:deployable:get_all")
    rows = await call_store(request, queries.list_deployables)
    return json_response({"deployables": paginate([_body(request, view) for view in rows], params)})


@operation(summary="Show a deployable", responses={200: schemas.Deployable}, tags=TAGS)
async def show_deployable(request: web.Request) -> web.Response:
    uuid = parse_uuid(request.match_info["uuid"], "deployable uuid")
    authorize(request, "cyborg:deployable:get_one")
    return json_response(_body(request, await call_store(request, queries.get_deployable, uuid)))


def _image_uuid(body) -> str:
    """The image of `[{"op": "replace", "path": "/program", "value": [{"image_uuid": U}]}]`."""
    if not isinstance(body, list) or len(body) != 1:
        raise BadRequest("The program request must be a JSON-Patch list with one operation")
    try:
        jsonpatch.JsonPatch(body)  # RFC 6902 shape: known op, a JSON pointer path, a value
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException, TypeError, AttributeError) as exc:
        raise BadRequest(f"Invalid JSON-Patch: {exc}") from None
    op = validated(schemas.ProgramOperation, body[0])
    if op.op != "replace" or op.path != "/program":
        raise BadRequest(f"Only 'replace' of '/program' is supported, not {op.op!r} of {op.path!r}")
    return parse_uuid(op.value[0].image_uuid, "image_uuid")


async def _outcome(request: web.Request, request_uuid: str) -> tuple[str, str | None]:
    """The request's (state, error) once it has ended, or as it stands after `program_wait` seconds.
    Read from the store: the programmer that runs it may be another front door's, or one that starts
    with the actors after this answer."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + request.app[SETTINGS].program_wait
    delay = POLL_FIRST
    while True:
        state, error = await call_store(request, program_requests.outcome, request_uuid)
        left = deadline - loop.time()
        if state not in program_requests.ACTIVE or left <= 0:
            return state, error
        await asyncio.sleep(min(delay, left))
        delay = min(delay * 2, POLL_MAX)


@operation(summary="Program a bitstream onto a deployable: 200 with the deployable once programmed, "
           "202 (program_status requested or programming) when that takes longer than program_wait",
           body=list[schemas.ProgramOperation], responses={200: schemas.Deployable, 202: schemas.Deployable},
           tags=TAGS)
async def program_deployable(request: web.Request) -> web.Response:
    uuid = parse_uuid(request.match_info["uuid"], "deployable uuid")
    if "uuid2" in request.match_info and request.match_info["uuid2"] != request.match_info["uuid"]:
        raise BadRequest("The two deployable uuids in the path differ")
    authorize(request, "cyborg:deployable:program")
    image = _image_uuid(await read_json(request))
    programmer = request.app.get(PROGRAMMER)
    if programmer is None:  # nothing would ever run it: say so instead of accepting it
        raise ApiError("Programming needs rayborg's actors (the host's agent runs the vendor tool) and this "
                       "daemon runs without them (--no-actors): nothing was recorded", status=503)
    view = await call_store(request, queries.record_program_request, uuid, image, ctx(request).project_id,
                            write=True)
    await programmer.submit(view.program.uuid)
    state, error = await _outcome(request, view.program.uuid)
    if state == "failed":  # Cyborg's FPGAProgramError is a 500 too
        raise ApiError(f"FPGA programming of deployable {uuid} with image {image} failed: {error}")
    view = await call_store(request, queries.get_deployable, uuid)
    return json_response(_body(request, view), status=200 if state == "done" else 202)

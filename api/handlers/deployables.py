"""/v2/deployables: list, show, and PATCH .../program to load a bitstream."""

from __future__ import annotations

import json

import jsonpatch
import jsonpointer
from aiohttp import web

from rayborg.api.app_keys import PROGRAMMER
from rayborg.api.errors import BadRequest
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
from rayborg.store.tables import Attribute, Deployable

TAGS = ["deployables"]


def _body(request: web.Request, dep: Deployable, attrs: list[Attribute]) -> dict:
    return schemas.Deployable(
        uuid=dep.uuid, parent_id=dep.parent_id, root_id=dep.root_id, name=dep.name,
        num_accelerators=dep.num_accelerators, device_id=dep.device_id,
        attributes_list=json.dumps([{a.key: a.value} for a in attrs]), rp_uuid=dep.rp_uuid,
        driver_name=dep.driver_name, bitstream_id=dep.bitstream_id, created_at=iso(dep.created_at),
        updated_at=iso(dep.updated_at), links=bookmark_links(request, "deployables", dep.uuid)
    ).model_dump(mode="json")


@operation(summary="List deployables", responses={200: schemas.DeployableList}, tags=TAGS)
async def list_deployables(request: web.Request) -> web.Response:
    params = query_params(request, set())
    authorize(request, "cyborg:deployable:get_all")
    rows = await call_store(request, queries.list_deployables)
    return json_response({"deployables": paginate([_body(request, d, a) for d, a in rows], params)})


@operation(summary="Show a deployable", responses={200: schemas.Deployable}, tags=TAGS)
async def show_deployable(request: web.Request) -> web.Response:
    uuid = parse_uuid(request.match_info["uuid"], "deployable uuid")
    authorize(request, "cyborg:deployable:get_one")
    return json_response(_body(request, *await call_store(request, queries.get_deployable, uuid)))


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


@operation(summary="Program a bitstream onto a deployable", body=list[schemas.ProgramOperation],
           responses={200: schemas.Deployable}, tags=TAGS)
async def program_deployable(request: web.Request) -> web.Response:
    uuid = parse_uuid(request.match_info["uuid"], "deployable uuid")
    if "uuid2" in request.match_info and request.match_info["uuid2"] != request.match_info["uuid"]:
        raise BadRequest("The two deployable uuids in the path differ")
    authorize(request, "cyborg:deployable:program")
    image = _image_uuid(await read_json(request))
    dep, attrs, program_request = await call_store(request, queries.record_program_request, uuid, image,
                                                   ctx(request).project_id, write=True)
    programmer = request.app.get(PROGRAMMER)
    if programmer is not None:  # the Ray runtime programs it through the host's agent
        await programmer.submit(program_request.uuid)
    return json_response(_body(request, dep, attrs))

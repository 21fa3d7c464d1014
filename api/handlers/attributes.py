"""/v2/attributes: list (deployable_id/key filters), show, create, delete."""

from __future__ import annotations

from aiohttp import web

from rayborg.api.errors import BadRequest
from rayborg.api.http import (
    authorize,
    call_store,
    empty_response,
    iso,
    json_response,
    paginate,
    parse_uuid,
    query_params,
    read_json,
)
from rayborg.api.links import self_link
from rayborg.api.openapi_meta import operation
from rayborg.api.schemas import attributes as schemas
from rayborg.api.schemas.common import validated
from rayborg.api.schemas.common import MAX_DB_INT
from rayborg.store.queries import attributes as queries
from rayborg.store.tables import Attribute

TAGS = ["attributes"]


def _body(request: web.Request, attr: Attribute) -> dict:
    return schemas.Attribute(uuid=attr.uuid, deployable_id=attr.deployable_id, key=attr.key, value=attr.value,
                             created_at=iso(attr.created_at), updated_at=iso(attr.updated_at),
                             links=self_link(request, "attributes", attr.uuid)).model_dump(mode="json")


def _id_param(params: dict[str, str], name: str) -> int | None:
    """A database id from the query: an integer the INTEGER column can hold, else 400."""
    if name not in params:
        return None
    try:
        value = int(params[name])
    except ValueError:
        raise BadRequest(f"{name} must be an integer, got {params[name]!r}") from None
    if not 1 <= value <= MAX_DB_INT:
        raise BadRequest(f"{name} must be between 1 and {MAX_DB_INT}, got {value}")
    return value


@operation(summary="List attributes", query=schemas.AttributeQuery, responses={200: schemas.AttributeList},
           tags=TAGS)
async def list_attributes(request: web.Request) -> web.Response:
    params = query_params(request, {"deployable_id", "key"})
    authorize(request, "cyborg:attribute:get_all")
    attrs = await call_store(request, queries.list_attributes, _id_param(params, "deployable_id"),
                             params.get("key"))
    return json_response({"attributes": paginate([_body(request, a) for a in attrs], params)})


@operation(summary="Show an attribute", responses={200: schemas.Attribute}, tags=TAGS)
async def show_attribute(request: web.Request) -> web.Response:
    uuid = parse_uuid(request.match_info["uuid"], "attribute uuid")
    authorize(request, "cyborg:attribute:get_one")
    return json_response(_body(request, await call_store(request, queries.get_attribute, uuid)))


@operation(summary="Create an attribute", body=schemas.AttributeCreate, responses={201: schemas.Attribute},
           tags=TAGS)
async def create_attribute(request: web.Request) -> web.Response:
    authorize(request, "cyborg:attribute:create")
    body = await read_json(request)
    # openstacksdk wraps the object as {"attribute": {...}}; Cyborg's own form is bare.
    if isinstance(body, dict) and set(body) == {"attribute"}:
        body = validated(schemas.AttributeCreateWrapped, body).attribute
    else:
        body = validated(schemas.AttributeCreate, body)
    attr = await call_store(request, queries.create_attribute, body.deployable_id, body.key, body.value,
                            write=True)
    return json_response(_body(request, attr), status=201)


@operation(summary="Delete an attribute", responses={204: None}, tags=TAGS)
async def delete_attribute(request: web.Request) -> web.Response:
    uuid = parse_uuid(request.match_info["uuid"], "attribute uuid")
    authorize(request, "cyborg:attribute:delete")
    await call_store(request, queries.delete_attribute, uuid, write=True)
    return empty_response(204)

"""/v2/attributes: list (deployable_id/key filters), show, create, delete; and the per-deployable form
of the 2023.1 attribute API, /v2/deployable/{uuid}/attribute[/{uuid_or_key}] (also spelled
/v2/deployables/{uuid}/attributes[...]): list, show, create several, update, delete one or all.

A write to `rc` or a `traitN` key changes the deployable's resource provider: the store marks it for
a push in the same transaction and the handler nudges PlacementSync (when Ray runs) to push at once."""

from __future__ import annotations

from aiohttp import web

from rayborg.api.app_keys import PLACEMENT_SYNC
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


def _nudge(request: web.Request, changed: bool = True) -> None:
    """Placement's view of a deployable changed: ask PlacementSync (the Ray runtime) to push now. Without
    it the mark stays in the store for the next push."""
    sync = request.app.get(PLACEMENT_SYNC)
    if changed and sync is not None:
        sync.nudge.remote()


def _deleted(request: web.Request, host: str | None) -> None:
    """A Placement key was deleted on `host`'s deployable: push, and ask the host's agent (the Ray
    runtime) to report again, so that the driver's value of a key it reports is back at once."""
    if host is None:
        return
    _nudge(request)
    if request.app.get(PLACEMENT_SYNC) is not None:
        import ray

        from rayborg.actors.runtime_config import NAMESPACE, host_agent_name

        try:
            ray.get_actor(host_agent_name(host), namespace=NAMESPACE).sweep.remote(True)
        except ValueError:  # no agent for that host now: its next start reports anyway
            pass


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
    if queries.affects_placement(attr.key):
        _nudge(request)
    return json_response(_body(request, attr), status=201)


@operation(summary="Delete an attribute", responses={204: None}, tags=TAGS)
async def delete_attribute(request: web.Request) -> web.Response:
    uuid = parse_uuid(request.match_info["uuid"], "attribute uuid")
    authorize(request, "cyborg:attribute:delete")
    _deleted(request, await call_store(request, queries.delete_attribute, uuid, write=True))
    return empty_response(204)


# -- /v2/deployable/{uuid}/attribute[/{uuid_or_key}] ------------------------------------------------

def _deployable_uuid(request: web.Request) -> str:
    return parse_uuid(request.match_info["uuid"], "deployable uuid")


def _uuid_or_key(request: web.Request) -> str:
    value = request.match_info["uuid_or_key"]
    if not value or len(value) > 255 or "\x00" in value:
        raise BadRequest(f"Invalid attribute uuid or key: {value[:64]!r}")
    return value


def _brief(attr: Attribute) -> dict:
    return {"key": attr.key, "value": attr.value, "uuid": attr.uuid}


@operation(summary="List the attributes of a deployable", responses={200: schemas.DeployableAttributeList},
           tags=TAGS)
async def list_deployable_attributes(request: web.Request) -> web.Response:
    dep_uuid = _deployable_uuid(request)
    params = query_params(request, set())
    authorize(request, "cyborg:attribute:get_all")
    attrs = await call_store(request, queries.list_of_deployable, dep_uuid)
    return json_response({"attributes": paginate([_brief(a) for a in attrs], params)})


@operation(summary="Show an attribute of a deployable (by uuid or key)",
           responses={200: schemas.DeployableAttributeShown}, tags=TAGS)
async def show_deployable_attribute(request: web.Request) -> web.Response:
    dep_uuid, which = _deployable_uuid(request), _uuid_or_key(request)
    authorize(request, "cyborg:attribute:get_one")
    attr = await call_store(request, queries.get_of_deployable, dep_uuid, which)
    return json_response({"attribute": _brief(attr) | {"created_at": iso(attr.created_at),
                                                       "updated_at": iso(attr.updated_at)}})


@operation(summary="Create attributes of a deployable (all or none; a key it has already is 409)",
           body=schemas.DeployableAttributesCreate, responses={204: None}, tags=TAGS)
async def create_deployable_attributes(request: web.Request) -> web.Response:
    dep_uuid = _deployable_uuid(request)
    authorize(request, "cyborg:attribute:create")
    body = validated(schemas.DeployableAttributesCreate, await read_json(request))
    items = [(item.key, item.value) for item in body.root]
    _nudge(request, await call_store(request, queries.create_for_deployable, dep_uuid, items, write=True))
    return empty_response(204)


@operation(summary="Update an attribute of a deployable (by uuid or key)", body=schemas.AttributeUpdate,
           responses={204: None}, tags=TAGS)
async def update_deployable_attribute(request: web.Request) -> web.Response:
    dep_uuid, which = _deployable_uuid(request), _uuid_or_key(request)
    authorize(request, "cyborg:attribute:update")
    body = validated(schemas.AttributeUpdate, await read_json(request))
    _nudge(request, await call_store(request, queries.update_of_deployable, dep_uuid, which, body.value,
                                     write=True))
    return empty_response(204)


@operation(summary="Delete an attribute of a deployable (by uuid or key)", responses={204: None}, tags=TAGS)
async def delete_deployable_attribute(request: web.Request) -> web.Response:
    dep_uuid, which = _deployable_uuid(request), _uuid_or_key(request)
    authorize(request, "cyborg:attribute:delete")
    _deleted(request, await call_store(request, queries.delete_of_deployable, dep_uuid, which, write=True))
    return empty_response(204)


@operation(summary="Delete all attributes of a deployable", responses={204: None}, tags=TAGS)
async def delete_deployable_attributes(request: web.Request) -> web.Response:
    dep_uuid = _deployable_uuid(request)
    authorize(request, "cyborg:attribute:delete")
    _deleted(request, await call_store(request, queries.delete_all_of_deployable, dep_uuid, write=True))
    return empty_response(204)

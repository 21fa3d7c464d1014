"""/v2/device_profiles: list (by names), show (by uuid, or by name at >= 2.2), create, delete."""

from __future__ import annotations


from aiohttp import web

from rayborg.api import microversion
from rayborg.api.errors import BadRequest
from rayborg.api.http import (amount_limits, authorize, call_store, split_list, empty_response, is_uuid, iso,
                              json_response, paginate, parse_uuid, query_params, read_json, version)
from rayborg.api.links import base_url, self_link
from rayborg.api.openapi_meta import operation
from rayborg.api.schemas import device_profiles as schemas
from rayborg.api.schemas.common import validated
from rayborg.store.queries import device_profiles as queries
from rayborg.store.tables import DeviceProfile

TAGS = ["device_profiles"]
# Glance image uuids (train-device-profiles spec). Cyborg accepts anything here and only fails the
# bind (Glance finds no such image); a clear 400 at create is kinder and breaks no valid profile.
UUID_ACCEL_KEYS = ("accel:bitstream_id",)


def _body(request: web.Request, profile: DeviceProfile) -> dict:
    """The response item (schemas.DeviceProfile, built as a plain dict: the list is a hot path)."""
    return {
        "uuid": profile.uuid, "name": profile.name, "description": profile.description,
        "groups": profile.groups, "created_at": iso(profile.created_at), "updated_at": iso(profile.updated_at),
        "links": self_link(request, "device_profiles", profile.uuid),
    }


def _list_items(request: web.Request, profiles: list[queries.ProfileRow]) -> list[dict]:
    """`_body` of each listed profile, with the base URL worked out once and the dates as the
    prepared read gives them (already ISO text: `Prepared(iso_datetimes=True)`)."""
    prefix = f"{base_url(request)}/v2/device_profiles/"
    return [{"uuid": uuid, "name": name, "description": description, "groups": groups, "created_at": created,
             "updated_at": updated, "links": [{"href": prefix + uuid, "rel": "self"}]}
            for uuid, name, description, groups, created, updated in profiles]


@operation(summary="List device profiles", query=schemas.ListQuery,
           responses={200: schemas.DeviceProfileList}, tags=TAGS)
async def list_profiles(request: web.Request) -> web.Response:
    params = query_params(request, {"name"})
    authorize(request, "cyborg:device_profile:get_all")
    names = split_list(params["name"]) if params.get("name") else None
    profiles = await call_store(request, queries.list_profiles, names)
    items = paginate(_list_items(request, profiles), params)
    return json_response({"device_profiles": items})


@operation(summary="Show a device profile by uuid (or by name from 2.2)",
           responses={200: schemas.DeviceProfileShow}, tags=TAGS)
async def show_profile(request: web.Request) -> web.Response:
    query_params(request, set())
    authorize(request, "cyborg:device_profile:get_one")
    key = request.match_info["name_or_uuid"]
    if is_uuid(key):
        profile = await call_store(request, queries.get_profile, uuid=parse_uuid(key))
    else:
        microversion.require(version(request), microversion.PROFILE_BY_NAME)
        profile = await call_store(request, queries.get_profile, name=key)
    return json_response({"device_profile": _body(request, profile)})


@operation(summary="Create a device profile (the body is a one-element list)",
           body=list[schemas.DeviceProfileCreate], responses={201: schemas.DeviceProfile}, tags=TAGS)
async def create_profile(request: web.Request) -> web.Response:
    context = authorize(request, "cyborg:device_profile:create")
    body = await read_json(request)
    if not isinstance(body, list) or not body:
        raise BadRequest("The request body must be a list holding one device profile")
    if len(body) > 1:
        raise BadRequest("Only one device profile allowed per POST request for now.")
    spec = validated(schemas.DeviceProfileCreate, body[0], {schemas.LIMITS: amount_limits(request)})
    for index, group in enumerate(spec.groups):
        for key in UUID_ACCEL_KEYS:
            if key in group:
                parse_uuid(group[key], f"{key} in group {index}")
    profile = await call_store(request, queries.create_profile, spec.name, spec.groups, spec.description,
                               spec.uuid, project_id=context.project_id, write=True)
    return json_response(_body(request, profile), status=201)


async def _delete(request: web.Request, *, uuid: str | None = None, names: list[str] | None = None):
    authorize(request, "cyborg:device_profile:delete")
    await call_store(request, queries.delete_profiles, uuid=uuid, names=names, write=True)
    return empty_response(204)


@operation(summary="Delete device profiles by uuid, or by comma-separated names",
           responses={204: None}, tags=TAGS)
async def delete_profiles(request: web.Request) -> web.Response:
    query_params(request, set())
    key = request.match_info["names_or_uuid"]
    if is_uuid(key):
        return await _delete(request, uuid=parse_uuid(key))
    names = split_list(key)
    if not names:
        raise BadRequest("No device profile named")
    return await _delete(request, names=names)


@operation(summary="Delete device profiles named by ?value= (or ?name=), comma-separated",
           query=schemas.DeleteQuery, responses={204: None}, tags=TAGS)
async def delete_profiles_by_query(request: web.Request) -> web.Response:
    params = query_params(request, {"value", "name"})
    given = [key for key in ("value", "name") if key in params]
    if len(given) != 1:
        raise BadRequest("Name the device profiles to delete with exactly one of ?value= or ?name=")
    names = split_list(params[given[0]])
    if not names:
        raise BadRequest("No device profile named")
    return await _delete(request, names=names)

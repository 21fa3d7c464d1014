"""/v2/devices: list (type/vendor/hostname filters), show, enable, disable."""

from __future__ import annotations

from aiohttp import web

from rayborg.api import microversion
from rayborg.api.http import (
    authorize,
    call_store,
    iso,
    json_response,
    paginate,
    parse_uuid,
    query_params,
    version,
)
from rayborg.api.links import self_link
from rayborg.api.openapi_meta import operation
from rayborg.api.schemas import devices as schemas
from rayborg.store.queries import devices as queries
from rayborg.store.tables import Device, DeviceStatus

TAGS = ["devices"]


def _body(request: web.Request, device: Device) -> dict:
    body = schemas.Device(
        uuid=device.uuid, type=device.type, vendor=device.vendor, model=device.model,
        std_board_info=device.std_board_info, vendor_board_info=device.vendor_board_info,
        hostname=device.hostname, status=device.status, created_at=iso(device.created_at),
        updated_at=iso(device.updated_at), links=self_link(request, "devices", device.uuid)).model_dump(mode="json")
    if version(request) < microversion.DEVICE_STATUS:
        del body["status"]
    return body


@operation(summary="List devices", query=schemas.DeviceQuery, responses={200: schemas.DeviceList}, tags=TAGS)
async def list_devices(request: web.Request) -> web.Response:
    params = query_params(request, set(queries.FILTERS))
    authorize(request, "cyborg:device:get_all")
    devices = await call_store(request, queries.list_devices, params)
    return json_response({"devices": paginate([_body(request, d) for d in devices], params)})


@operation(summary="Show a device", responses={200: schemas.Device}, tags=TAGS)
async def show_device(request: web.Request) -> web.Response:
    uuid = parse_uuid(request.match_info["uuid"], "device uuid")
    authorize(request, "cyborg:device:get_one")
    return json_response(_body(request, await call_store(request, queries.get_device, uuid)))


async def _set_status(request: web.Request, status: DeviceStatus, rule: str) -> web.Response:
    uuid = parse_uuid(request.match_info["uuid"], "device uuid")
    authorize(request, rule)
    await call_store(request, queries.set_device_status, uuid, status, write=True)
    sync = request.app.get("placement_sync")
    if sync is not None:  # the Ray runtime: Placement's `reserved` follows at once
        sync.nudge.remote()
    return web.Response(status=200)


@operation(summary="Enable a device (reserved = 0 in Placement)", responses={200: None}, tags=TAGS)
async def enable_device(request: web.Request) -> web.Response:
    return await _set_status(request, DeviceStatus.ENABLED, "cyborg:device:enable")


@operation(summary="Disable a device (reserved = total in Placement)", responses={200: None}, tags=TAGS)
async def disable_device(request: web.Request) -> web.Response:
    return await _set_status(request, DeviceStatus.MAINTAINING, "cyborg:device:disable")

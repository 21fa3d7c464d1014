"""/v2/devices: list (type/vendor/hostname filters), show, enable, disable (with an optional reason)."""

from __future__ import annotations

from aiohttp import web

from rayborg.api import microversion
from rayborg.api.app_keys import PLACEMENT_SYNC
from rayborg.api.http import (
    authorize,
    call_store,
    iso,
    json_response,
    paginate,
    parse_uuid,
    query_params,
    read_json,
    version,
)
from rayborg.api.links import base_url
from rayborg.api.openapi_meta import operation
from rayborg.api.schemas import devices as schemas
from rayborg.api.schemas.common import validated
from rayborg.store.queries import devices as queries
from rayborg.store.tables import Device, DeviceStatus

TAGS = ["devices"]


def _item(base: str, with_status: bool, row) -> dict:
    """One response item (schemas.Device) from a row of queries.SHOWN, as a plain dict: the list is
    a hot path, where a model per item would cost more than the query."""
    (uuid, type_, vendor, model, std_board_info, vendor_board_info, hostname, status, reason, created,
     updated) = row
    body = {
        "uuid": uuid, "type": type_, "vendor": vendor, "model": model, "std_board_info": std_board_info,
        "vendor_board_info": vendor_board_info, "hostname": hostname, "status": status, "status_reason": reason,
        "created_at": iso(created), "updated_at": iso(updated),
        "links": [{"href": f"{base}/v2/devices/{uuid}", "rel": "self"}],
    }
    if not with_status:
        del body["status"], body["status_reason"]
    return body


def _body(request: web.Request, device: Device) -> dict:
    row = tuple(getattr(device, column.key) for column in queries.SHOWN)
    with_status = version(request) >= microversion.DEVICE_STATUS
    body = _item(base_url(request), with_status, row)
    if with_status:  # rayborg's addition, in the show only (the list stays Cyborg's, and cheap)
        body["stats"] = device.stats or {}
    return body


@operation(summary="List devices", query=schemas.DeviceQuery, responses={200: schemas.DeviceList}, tags=TAGS)
async def list_devices(request: web.Request) -> web.Response:
    params = query_params(request, set(queries.FILTERS))
    authorize(request, "cyborg:device:get_all")
    rows = await call_store(request, queries.list_devices, params)
    base, with_status = base_url(request), version(request) >= microversion.DEVICE_STATUS
    return json_response({"devices": paginate([_item(base, with_status, r) for r in rows], params)})


@operation(summary="Show a device", responses={200: schemas.Device}, tags=TAGS)
async def show_device(request: web.Request) -> web.Response:
    uuid = parse_uuid(request.match_info["uuid"], "device uuid")
    authorize(request, "cyborg:device:get_one")
    return json_response(_body(request, await call_store(request, queries.get_device, uuid)))


async def _set_status(request: web.Request, status: DeviceStatus, rule: str) -> web.Response:
    uuid = parse_uuid(request.match_info["uuid"], "device uuid")
    authorize(request, rule)
    reason = None
    if status == DeviceStatus.MAINTAINING and (await request.read()).strip():
        # Optional: clients of Cyborg send none; {"reason": "..."} says why (shown as status_reason).
        reason = validated(schemas.DeviceDisable, await read_json(request)).reason
    await call_store(request, queries.set_device_status, uuid, status, reason, write=True)
    sync = request.app.get(PLACEMENT_SYNC)
    if sync is not None:  # the Ray runtime: Placement's `reserved` follows at once
        sync.nudge.remote()
    return web.Response(status=200)


@operation(summary="Enable a device (reserved = 0 in Placement)", responses={200: None}, tags=TAGS)
async def enable_device(request: web.Request) -> web.Response:
    return await _set_status(request, DeviceStatus.ENABLED, "cyborg:device:enable")


@operation(summary="Disable a device (reserved = total in Placement), optionally saying why",
           body=schemas.DeviceDisable, body_required=False, responses={200: None}, tags=TAGS)
async def disable_device(request: web.Request) -> web.Response:
    return await _set_status(request, DeviceStatus.MAINTAINING, "cyborg:device:disable")

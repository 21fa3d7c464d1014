"""PLACEHOLDER: handlers for /v2/devices, being written."""

from rayborg.api.errors import ApiError


async def list_devices(request):
    raise ApiError("not implemented yet", 501)


async def show_device(request):
    raise ApiError("not implemented yet", 501)


async def enable_device(request):
    raise ApiError("not implemented yet", 501)


async def disable_device(request):
    raise ApiError("not implemented yet", 501)

"""PLACEHOLDER: handlers for /v2/deployables, being written."""

from rayborg.api.errors import ApiError


async def list_deployables(request):
    raise ApiError("not implemented yet", 501)


async def show_deployable(request):
    raise ApiError("not implemented yet", 501)


async def program_deployable(request):
    raise ApiError("not implemented yet", 501)

"""PLACEHOLDER: handlers for /v2/accelerator_requests, being written."""

from rayborg.api.errors import ApiError


async def list_arqs(request):
    raise ApiError("not implemented yet", 501)


async def create_arqs(request):
    raise ApiError("not implemented yet", 501)


async def bind_unbind(request):
    raise ApiError("not implemented yet", 501)


async def delete_arqs(request):
    raise ApiError("not implemented yet", 501)


async def show_arq(request):
    raise ApiError("not implemented yet", 501)


async def bind_unbind_one(request):
    raise ApiError("not implemented yet", 501)


async def delete_arq(request):
    raise ApiError("not implemented yet", 501)

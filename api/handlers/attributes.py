"""PLACEHOLDER: handlers for /v2/attributes, being written."""

from rayborg.api.errors import ApiError


async def list_attributes(request):
    raise ApiError("not implemented yet", 501)


async def create_attribute(request):
    raise ApiError("not implemented yet", 501)


async def show_attribute(request):
    raise ApiError("not implemented yet", 501)


async def delete_attribute(request):
    raise ApiError("not implemented yet", 501)

"""PLACEHOLDER: handlers for /v2/device_profiles, being written."""

from rayborg.api.errors import ApiError


async def list_profiles(request):
    raise ApiError("not implemented yet", 501)


async def create_profile(request):
    raise ApiError("not implemented yet", 501)


async def delete_profiles_by_query(request):
    raise ApiError("not implemented yet", 501)


async def show_profile(request):
    raise ApiError("not implemented yet", 501)


async def delete_profiles(request):
    raise ApiError("not implemented yet", 501)

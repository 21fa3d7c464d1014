"""Version discovery: `GET /` lists the API versions, `GET /v2` describes v2 (no auth for either)."""

from __future__ import annotations

from aiohttp import web

from rayborg.api import microversion
from rayborg.api.app_keys import OPENAPI, ROUTE_TABLE
from rayborg.api.http import json_response
from rayborg.api.links import base_url
from rayborg.api.openapi_meta import operation
from rayborg.api.schemas.root import RootDocument, VersionDocument

NAME = "OpenStack Cyborg API"
DESCRIPTION = ("Cyborg is the OpenStack project for lifecycle management of hardware accelerators, "
               "such as GPUs,FPGAs, AI chips, security accelerators, etc.")


def _version_entry(request: web.Request, version_id: str, href: str) -> dict:
    return {"id": version_id, "status": "CURRENT",
            "min_version": microversion.fmt(microversion.MIN_VERSION),
            "max_version": microversion.fmt(microversion.MAX_VERSION),
            "links": [{"href": href, "rel": "self"}]}


@operation(summary="List API versions", responses={200: RootDocument}, tags=["versions"])
async def versions(request: web.Request) -> web.Response:
    entry = _version_entry(request, "v2", f"{base_url(request)}/v2")
    return json_response({"name": NAME, "description": DESCRIPTION, "versions": [entry],
                          "default_version": entry})


@operation(summary="Show the v2 API version", responses={200: VersionDocument}, tags=["versions"])
async def v2_version(request: web.Request) -> web.Response:
    return json_response(_version_entry(request, "v2.0", f"{base_url(request)}/v2/"))


async def openapi_document(request: web.Request) -> web.Response:
    from rayborg.api.openapi import build_document

    if OPENAPI not in request.app:
        request.app[OPENAPI] = build_document(request.app[ROUTE_TABLE])
    return json_response(request.app[OPENAPI])

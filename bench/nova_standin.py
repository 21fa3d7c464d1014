"""A Nova stand-in for the write benchmark: answers version discovery (what keystoneauth and
openstacksdk ask first) and `POST /v2.1/os-server-external-events` with 200 per event, counting them.

    python bench/nova_standin.py PORT        # serves http://127.0.0.1:PORT/v2.1
"""

from __future__ import annotations

import sys

from aiohttp import web

EVENTS = {"calls": 0, "events": 0}


def _version(request: web.Request) -> dict:
    href = f"http://{request.host}/v2.1/"
    return {"id": "v2.1", "status": "CURRENT", "version": "2.95", "min_version": "2.1",
            "updated": "2013-07-23T11:33:21Z", "links": [{"rel": "self", "href": href}]}


async def root(request: web.Request) -> web.Response:
    return web.json_response({"versions": [_version(request)]})


async def v21(request: web.Request) -> web.Response:
    return web.json_response({"version": _version(request)})


async def events(request: web.Request) -> web.Response:
    body = await request.json()
    EVENTS["calls"] += 1
    EVENTS["events"] += len(body.get("events", []))
    return web.json_response({"events": [dict(e, code=200, status="completed") for e in body.get("events", [])]})


async def stats(_request: web.Request) -> web.Response:
    return web.json_response(EVENTS)


def main() -> None:
    app = web.Application()
    app.router.add_get("/", root)
    app.router.add_get("/v2.1", v21)
    app.router.add_get("/v2.1/", v21)
    app.router.add_post("/v2.1/os-server-external-events", events)
    app.router.add_get("/_stats", stats)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)


if __name__ == "__main__":
    main()

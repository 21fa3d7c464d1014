"""A Nova stand-in for the write benchmark: answers version discovery (what keystoneauth and
openstacksdk ask first) and `POST /v2.1/os-server-external-events` with 200 per event, counting them
and noting when each ARQ's event arrived (`POST /_arrivals` with a list of ARQ uuids reads them back).

    python bench/nova_standin.py PORT        # serves http://127.0.0.1:PORT/v2.1
"""

from __future__ import annotations

import sys
import time

from aiohttp import web

EVENTS = {"calls": 0, "events": 0}
ARRIVED: dict[str, float] = {}  # event tag (ARQ uuid) -> time.time() of its first arrival


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
    now = time.time()
    for event in body.get("events", []):
        ARRIVED.setdefault(event.get("tag", ""), now)
    return web.json_response({"events": [dict(e, code=200, status="completed") for e in body.get("events", [])]})


async def stats(_request: web.Request) -> web.Response:
    return web.json_response(EVENTS)


async def arrivals(request: web.Request) -> web.Response:
    """When the events of the ARQs named in the body (a JSON list of uuids) arrived: uuid -> time."""
    return web.json_response({tag: ARRIVED[tag] for tag in await request.json() if tag in ARRIVED})


def main() -> None:
    app = web.Application()
    app.router.add_get("/", root)
    app.router.add_get("/v2.1", v21)
    app.router.add_get("/v2.1/", v21)
    app.router.add_post("/v2.1/os-server-external-events", events)
    app.router.add_get("/_stats", stats)
    app.router.add_post("/_arrivals", arrivals)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)


if __name__ == "__main__":
    main()

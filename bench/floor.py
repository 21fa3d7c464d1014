"""The floor: a bare aiohttp handler per endpoint reading the same rows from the same SQLite file
(sqlite3, one connection per process, no ORM, no policy, no microversions), serialised with json.
It is the physical limit of "HTTP + SQLite + JSON in Python" on this box, not a usable service.

    python bench/floor.py --db PATH --port N [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import socket
import sqlite3

from aiohttp import web

ARQ_SQL = ("SELECT a.uuid, a.state, p.name, a.device_profile_group_id, a.hostname, a.device_rp_uuid, "
           "a.instance_uuid, a.project_id, a.created_at, a.updated_at FROM extended_accelerator_requests a "
           "JOIN device_profiles p ON p.id = a.device_profile_id")
ARQ_KEYS = ("uuid", "state", "device_profile_name", "device_profile_group_id", "hostname", "device_rp_uuid",
            "instance_uuid", "project_id", "created_at", "updated_at")


def make_app(db: str) -> web.Application:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, check_same_thread=False)

    def arq(row) -> dict:
        d = dict(zip(ARQ_KEYS, row))
        d.update(attach_handle_type="", attach_handle_uuid=None, attach_handle_info={})
        return d

    async def profiles(_req):
        rows = conn.execute("SELECT uuid, name, description, groups, created_at, updated_at "
                            "FROM device_profiles ORDER BY id").fetchall()
        return web.json_response({"device_profiles": [
            {"uuid": u, "name": n, "description": d, "groups": json.loads(g), "created_at": c, "updated_at": up}
            for u, n, d, g, c, up in rows]})

    async def arqs(_req):
        rows = conn.execute(ARQ_SQL + " ORDER BY a.id").fetchall()
        return web.json_response({"arqs": [arq(r) for r in rows]})

    async def one_arq(req):
        row = conn.execute(ARQ_SQL + " WHERE a.uuid = ?", (req.match_info["uuid"],)).fetchone()
        if row is None:
            raise web.HTTPNotFound()
        return web.json_response(arq(row))

    async def devices(_req):
        cur = conn.execute("SELECT uuid, type, vendor, model, std_board_info, vendor_board_info, hostname, "
                           "status, created_at, updated_at FROM devices ORDER BY id")
        keys = [c[0] for c in cur.description]
        return web.json_response({"devices": [dict(zip(keys, r)) for r in cur.fetchall()]})

    async def root(_req):
        return web.json_response({"id": "v2.0", "status": "CURRENT"})

    app = web.Application()
    app.router.add_get("/v2", root)
    app.router.add_get("/v2/device_profiles", profiles)
    app.router.add_get("/v2/accelerator_requests", arqs)
    app.router.add_get("/v2/accelerator_requests/{uuid}", one_arq)
    app.router.add_get("/v2/devices", devices)
    return app


def _run(db: str, port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    web.run_app(make_app(db), sock=sock, print=None, access_log=None)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    procs = [multiprocessing.Process(target=_run, args=(args.db, args.port), daemon=True)
             for _ in range(args.workers - 1)]
    for p in procs:
        p.start()
    _run(args.db, args.port)


if __name__ == "__main__":
    main()

"""Write-path benchmark against one deployment (rayborg or Cyborg), only on 127.0.0.1, bounded:

  * device profile create + delete (one client, N pairs);
  * ARQ create from a 2-accelerator profile, then bind (PATCH as Nova sends it, with a service role)
    polled until Bound, unbind, delete: create->Bound latency (one client, N cycles);
  * the same cycle from C concurrent clients for D seconds: binds/s.

    python bench/writes.py URL [--cycles 30] [--clients 10] [--duration 10]

Prints one JSON object. Status codes are recorded as they come: Cyborg answers a bind PATCH with 500
when it cannot notify Nova although the ARQs are Bound, so Bound is read back, not inferred.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dataset

BIND_WAIT_S = 10.0
# Polling for Bound (Nova waits for the event instead): 1 ms, doubling up to 16 ms, the same for
# both deployments. A fixed 2 ms poll from every client was most of the load it measured.
POLL_FIRST_S, POLL_MAX_S = 0.001, 0.016
DEPLOYABLES = dataset.deployables()


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, round(q * (len(s) - 1)))] * 1000, 2)


class Client:
    def __init__(self, session: aiohttp.ClientSession, base: str):
        self.s, self.base = session, base
        self.codes: Counter[str] = Counter()
        self.headers = dict(dataset.HEADERS, **{"Content-Type": "application/json"})
        self.service = dict(self.headers, **dataset.SERVICE_HEADERS_EXTRA)

    async def call(self, op: str, method: str, path: str, body=None, service: bool = False):
        async with self.s.request(method, self.base + path, headers=self.service if service else self.headers,
                                  data=None if body is None else json.dumps(body)) as r:
            text = await r.text()
            self.codes[f"{op} {r.status}"] += 1
            try:
                return r.status, json.loads(text) if text else None
            except ValueError:
                return r.status, None


async def profile_pair(c: Client, i: int) -> bool:
    status, body = await c.call("profile create", "POST", "/v2/device_profiles",
                                [{"name": f"bench-w-{uuid.uuid4().hex[:12]}-{i}", "groups": [{"resources:FPGA": "1"}]}])
    if status != 201:
        return False
    status, _ = await c.call("profile delete", "DELETE", f"/v2/device_profiles/{body['uuid']}")
    return status == 204


async def bind_cycle(c: Client, slot: int) -> dict:
    """create 2 ARQs -> bind -> poll until Bound -> unbind -> delete; returns timings and states."""
    out: dict = {"bound": False}
    t0 = time.perf_counter()
    status, body = await c.call("arq create", "POST", "/v2/accelerator_requests",
                                {"device_profile_name": dataset.WRITE_PROFILE})
    out["create_s"] = time.perf_counter() - t0
    if status != 201:
        return out
    arqs = [a["uuid"] for a in body["arqs"]]
    instance = str(uuid.uuid4())
    patch = {}
    for j, arq in enumerate(arqs):
        dep = DEPLOYABLES[(2 * slot + j) % len(DEPLOYABLES)]
        patch[arq] = [{"path": "/hostname", "op": "add", "value": dep["hostname"]},
                      {"path": "/device_rp_uuid", "op": "add", "value": dep["rp_uuid"]},
                      {"path": "/instance_uuid", "op": "add", "value": instance}]
    out["bind_status"], _ = await c.call("bind", "PATCH", "/v2/accelerator_requests", patch, service=True)
    deadline = time.perf_counter() + BIND_WAIT_S
    states: list[str] = []
    pause = POLL_FIRST_S
    while time.perf_counter() < deadline:
        st, lst = await c.call("poll", "GET", f"/v2/accelerator_requests?instance={instance}")
        states = [a["state"] for a in lst["arqs"]] if st == 200 and lst else []
        if states and all(s in ("Bound", "BindFailed") for s in states):
            break
        await asyncio.sleep(pause)
        pause = min(pause * 2, POLL_MAX_S)
    out["states"] = states
    out["bound"] = len(states) == len(arqs) and all(s == "Bound" for s in states)
    if out["bound"]:
        out["create_to_bound_s"] = time.perf_counter() - t0
    unpatch = {arq: [{"path": "/hostname", "op": "remove"}, {"path": "/device_rp_uuid", "op": "remove"},
                     {"path": "/instance_uuid", "op": "remove"}] for arq in arqs}
    out["unbind_status"], _ = await c.call("unbind", "PATCH", "/v2/accelerator_requests", unpatch, service=True)
    out["delete_status"], _ = await c.call("arq delete", "DELETE", f"/v2/accelerator_requests?arqs={','.join(arqs)}",
                                           service=True)
    return out


async def run(base: str, cycles: int, clients: int, duration: float) -> dict:
    if urlsplit(base).hostname not in ("127.0.0.1", "localhost"):
        raise SystemExit("writes only targets 127.0.0.1")
    timeout = aiohttp.ClientTimeout(total=30)
    res: dict = {}
    async with aiohttp.ClientSession(timeout=timeout) as session:
        c = Client(session, base)
        # profile create + delete, one client
        times, ok = [], 0
        for i in range(cycles):
            t0 = time.perf_counter()
            ok += await profile_pair(c, i)
            times.append(time.perf_counter() - t0)
        res["profile_create_delete"] = {"pairs": cycles, "ok": ok, "p50_ms": pct(times, 0.5),
                                        "p99_ms": pct(times, 0.99)}
        # create -> Bound -> unbind -> delete, one client
        seq = [await bind_cycle(c, i) for i in range(cycles)]
        bound = [r["create_to_bound_s"] for r in seq if r["bound"]]
        res["bind_sequential"] = {
            "cycles": cycles, "arqs_per_cycle": 2, "bound_cycles": len(bound),
            "arq_create_p50_ms": pct([r["create_s"] for r in seq if "create_s" in r], 0.5),
            "create_to_bound_p50_ms": pct(bound, 0.5), "create_to_bound_p99_ms": pct(bound, 0.99),
            "bind_status": dict(Counter(str(r.get("bind_status")) for r in seq)),
            "unbind_status": dict(Counter(str(r.get("unbind_status")) for r in seq)),
            "delete_status": dict(Counter(str(r.get("delete_status")) for r in seq)),
            "final_states": dict(Counter(s for r in seq for s in r.get("states", [])))}
        # the same cycle from many clients
        counter = itertools.count()
        stop_at = time.perf_counter() + duration
        results: list[dict] = []

        async def worker() -> None:
            cw = Client(session, base)
            while time.perf_counter() < stop_at:
                results.append(await bind_cycle(cw, next(counter)))
            c.codes.update(cw.codes)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - t0
        bound = [r["create_to_bound_s"] for r in results if r["bound"]]
        res["bind_concurrent"] = {
            "clients": clients, "seconds": round(elapsed, 2), "cycles": len(results), "bound_cycles": len(bound),
            "binds_per_s": round(2 * len(bound) / elapsed, 1),
            "create_to_bound_p50_ms": pct(bound, 0.5), "create_to_bound_p99_ms": pct(bound, 0.99),
            "bind_status": dict(Counter(str(r.get("bind_status")) for r in results))}
        res["status_codes"] = dict(sorted(c.codes.items()))
        res["create_to_bound_p50_ms_all"] = statistics.median(bound) * 1000 if bound else None
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("url", help="service root, e.g. http://127.0.0.1:6666 or http://127.0.0.1:8080/accelerator")
    ap.add_argument("--cycles", type=int, default=30)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--duration", type=float, default=10.0)
    args = ap.parse_args()
    out = asyncio.run(run(args.url.rstrip("/"), min(args.cycles, 1000), min(args.clients, 100),
                          min(args.duration, 60.0)))
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()

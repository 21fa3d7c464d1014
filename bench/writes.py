"""Write-path benchmark against one deployment (rayborg or Cyborg), only on 127.0.0.1, bounded:

  * device profile create + delete (one client, N pairs);
  * ARQ create from a 2-accelerator profile, then bind (PATCH as Nova sends it, with a service role)
    polled until Bound, unbind, delete: create->Bound latency (one client, N cycles);
  * the same cycle from C concurrent clients for D seconds: ARQs bound/s of whole cycles;
  * a bind burst as Nova makes it: N instances' ARQs created beforehand, then one bind PATCH per
    instance from 50 concurrent clients, done when the Nova stand-in has every ARQ's event (Nova
    waits for that event, it does not poll): ARQs bound/s and PATCH -> event latency.

    python bench/writes.py URL [--cycles 30] [--clients 10] [--duration 10] [--burst 500 --nova NOVA]
                           [--parts profiles,sequential,concurrent,burst]

Prints one JSON object. Status codes are recorded as they come: Cyborg answers a bind PATCH with 500
when it cannot notify Nova although the ARQs are Bound, so Bound is read back, not inferred.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
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
        """(status, parsed JSON body); (None, None) when no answer came (client timeout, reset):
        counted as "<op> timeout"/"<op> failed", as the read load counts them, not a crash."""
        try:
            async with self.s.request(method, self.base + path, data=None if body is None else json.dumps(body),
                                      headers=self.service if service else self.headers) as r:
                text = await r.text()
        except asyncio.TimeoutError:
            self.codes[f"{op} timeout"] += 1
            return None, None
        except aiohttp.ClientError:
            self.codes[f"{op} failed"] += 1
            return None, None
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
    out["bind_status"], _ = await c.call("bind", "PATCH", "/v2/accelerator_requests",
                                         bind_patch(arqs, instance, slot), service=True)
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


def bind_patch(arqs: list[str], instance: str, slot: int) -> dict:
    """Nova's bind PATCH for one instance's ARQs, on deployables chosen round-robin."""
    patch = {}
    for j, arq in enumerate(arqs):
        dep = DEPLOYABLES[(len(arqs) * slot + j) % len(DEPLOYABLES)]
        patch[arq] = [{"path": "/hostname", "op": "add", "value": dep["hostname"]},
                      {"path": "/device_rp_uuid", "op": "add", "value": dep["rp_uuid"]},
                      {"path": "/instance_uuid", "op": "add", "value": instance}]
    return patch


async def bind_burst(session: aiohttp.ClientSession, base: str, nova: str, instances: int,
                     clients: int = 50) -> dict:
    """Bind `instances` x 2 ARQs created beforehand, one PATCH per instance from `clients` concurrent
    clients; done when the Nova stand-in has the events of all of them, or they are listed resolved
    (or 60 s have passed); an ARQ counts as bound when its event arrived or it was seen resolved."""
    c = Client(session, base)
    sem = asyncio.Semaphore(10)

    async def create() -> list[str]:
        async with sem:
            status, body = await c.call("burst create", "POST", "/v2/accelerator_requests",
                                        {"device_profile_name": dataset.WRITE_PROFILE})
            return [a["uuid"] for a in body["arqs"]] if status == 201 else []

    groups = [g for g in await asyncio.gather(*(create() for _ in range(instances))) if g]
    work = list(enumerate(groups))
    sent: dict[str, float] = {}
    patch_s: list[float] = []

    async def client() -> None:
        while work:
            slot, arqs = work.pop()
            t = time.time()
            for arq in arqs:
                sent[arq] = t
            await c.call("burst bind", "PATCH", "/v2/accelerator_requests",
                         bind_patch(arqs, str(uuid.uuid4()), slot), service=True)
            patch_s.append(time.time() - t)

    t0 = time.time()
    await asyncio.gather(*(client() for _ in range(clients)))
    patches_done = time.time() - t0
    # Done when every ARQ's event reached the Nova stand-in, or (a deployment that cannot tell Nova)
    # its instance's ARQs are listed as resolved; polled every 0.5 s, and only for those instances.
    arrived: dict[str, float] = {}
    polled: set[str] = set()
    instance_of: dict[str, str] = {}
    deadline, next_poll = t0 + 60, time.time() + 0.5
    while len(arrived) < len(sent) and time.time() < deadline:
        async with session.post(nova + "/_arrivals", json=[u for u in sent if u not in arrived]) as r:
            arrived.update(await r.json())
        if time.time() >= next_poll:
            next_poll = time.time() + 0.5
            for arqs in groups:
                if all(u in arrived for u in arqs):
                    continue
                st, lst = await c.call("burst poll", "GET", "/v2/accelerator_requests?instance="
                                       + instance_of.setdefault(arqs[0], await _instance_of(c, arqs[0])))
                if st == 200 and lst and all(a["state"] in ("Bound", "BindFailed") for a in lst["arqs"]):
                    now = time.time()
                    for u in arqs:
                        if u not in arrived:
                            arrived[u] = now
                            polled.add(u)
        if len(arrived) < len(sent):
            await asyncio.sleep(0.02)
    _, listed = await c.call("burst list", "GET", "/v2/accelerator_requests")
    states = Counter(a["state"] for a in (listed or {}).get("arqs", []) if a["uuid"] in sent)
    for arqs in groups:  # leave the deployment as it was
        await c.call("burst delete", "DELETE", f"/v2/accelerator_requests?arqs={','.join(arqs)}", service=True)
    last = max(arrived.values(), default=t0)
    return {"instances": len(groups), "arqs": len(sent), "clients": clients, "nova_events": len(arrived) - len(polled),
            "seen_resolved_by_polling": len(polled),
            "states": dict(states), "patches_seconds": round(patches_done, 3),
            "seconds_to_last_event": round(last - t0, 3),
            "binds_per_s": round(min(len(arrived), states.get("Bound", 0)) / (last - t0), 1) if arrived else 0.0,
            "patch_p50_ms": pct(patch_s, 0.5), "patch_p99_ms": pct(patch_s, 0.99),
            "bind_to_event_p50_ms": pct([arrived[u] - sent[u] for u in arrived], 0.5),
            "bind_to_event_p99_ms": pct([arrived[u] - sent[u] for u in arrived], 0.99)}


async def _instance_of(c: Client, arq: str) -> str:
    _, body = await c.call("burst show", "GET", f"/v2/accelerator_requests/{arq}")
    return (body or {}).get("instance_uuid") or ""


PARTS = ("profiles", "sequential", "concurrent", "burst")


async def run(base: str, cycles: int, clients: int, duration: float, burst: int = 0,
              nova: str | None = None, parts: tuple[str, ...] = PARTS) -> dict:
    if urlsplit(base).hostname not in ("127.0.0.1", "localhost"):
        raise SystemExit("writes only targets 127.0.0.1")
    timeout = aiohttp.ClientTimeout(total=30)
    res: dict = {}
    async with aiohttp.ClientSession(timeout=timeout) as session:
        c = Client(session, base)
        if "profiles" in parts:  # profile create + delete, one client
            times, ok = [], 0
            for i in range(cycles):
                t0 = time.perf_counter()
                ok += await profile_pair(c, i)
                times.append(time.perf_counter() - t0)
            res["profile_create_delete"] = {"pairs": cycles, "ok": ok, "p50_ms": pct(times, 0.5),
                                            "p99_ms": pct(times, 0.99)}
        if "sequential" in parts:  # create -> Bound -> unbind -> delete, one client
            res["bind_sequential"] = await sequential(c, cycles)
        if "concurrent" in parts:
            res["bind_concurrent"] = await concurrent(session, base, c, clients, duration)
        if burst and nova and "burst" in parts:
            res["bind_burst"] = await bind_burst(session, base, nova, burst)
        res["status_codes"] = dict(sorted(c.codes.items()))
    return res


async def sequential(c: Client, cycles: int) -> dict:
    seq = [await bind_cycle(c, i) for i in range(cycles)]
    bound = [r["create_to_bound_s"] for r in seq if r["bound"]]
    return {
        "cycles": cycles, "arqs_per_cycle": 2, "bound_cycles": len(bound),
        "arq_create_p50_ms": pct([r["create_s"] for r in seq if "create_s" in r], 0.5),
        "create_to_bound_p50_ms": pct(bound, 0.5), "create_to_bound_p99_ms": pct(bound, 0.99),
        "bind_status": dict(Counter(str(r.get("bind_status")) for r in seq)),
        "unbind_status": dict(Counter(str(r.get("unbind_status")) for r in seq)),
        "delete_status": dict(Counter(str(r.get("delete_status")) for r in seq)),
        "final_states": dict(Counter(s for r in seq for s in r.get("states", [])))}


async def concurrent(session: aiohttp.ClientSession, base: str, c: Client, clients: int, duration: float) -> dict:
    """The sequential cycle from many clients for `duration` s; their status codes are added to `c`'s."""
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
    return {
        "clients": clients, "seconds": round(elapsed, 2), "cycles": len(results), "bound_cycles": len(bound),
        "binds_per_s": round(2 * len(bound) / elapsed, 1) if elapsed else 0.0,
        "create_to_bound_p50_ms": pct(bound, 0.5), "create_to_bound_p99_ms": pct(bound, 0.99),
        "bind_status": dict(Counter(str(r.get("bind_status")) for r in results))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("url", help="service root, e.g. http://127.0.0.1:6666 or http://127.0.0.1:8080/accelerator")
    ap.add_argument("--cycles", type=int, default=30)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--burst", type=int, default=0, help="instances (2 ARQs each) in the bind burst (max 600)")
    ap.add_argument("--nova", help="the Nova stand-in's root, e.g. http://127.0.0.1:8774 (for the burst)")
    ap.add_argument("--parts", default=",".join(PARTS),
                    help=f"comma-separated parts to run, in this order whatever the list's (default {','.join(PARTS)})")
    args = ap.parse_args()
    parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
    if unknown := set(parts) - set(PARTS):
        raise SystemExit(f"unknown --parts {sorted(unknown)}: choose from {','.join(PARTS)}")
    if args.nova and urlsplit(args.nova).hostname not in ("127.0.0.1", "localhost"):
        raise SystemExit("writes only targets 127.0.0.1")
    out = asyncio.run(run(args.url.rstrip("/"), min(args.cycles, 1000), min(args.clients, 100),
                          min(args.duration, 60.0), min(args.burst, 600), args.nova and args.nova.rstrip("/"), parts))
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()

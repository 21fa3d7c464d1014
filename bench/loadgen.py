"""Bounded closed-loop load generator: N concurrent aiohttp clients send GETs to one URL on 127.0.0.1
for at most D seconds and at most M requests, then print one JSON line (req/s, p50, p99, errors).

    python bench/loadgen.py URL [--clients 50] [--duration 10] [--max-requests 200000] [--header K:V ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from urllib.parse import urlsplit

import aiohttp


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


async def run(url: str, clients: int, duration: float, max_requests: int, headers: dict) -> dict:
    if urlsplit(url).hostname not in ("127.0.0.1", "localhost"):
        raise SystemExit("loadgen only targets 127.0.0.1")
    latencies: list[float] = []
    errors: dict[str, int] = {}
    sent = 0
    stop_at = time.perf_counter() + duration
    timeout = aiohttp.ClientTimeout(total=max(30.0, duration))
    connector = aiohttp.TCPConnector(limit=clients, force_close=False)

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal sent
        while sent < max_requests and time.perf_counter() < stop_at:
            sent += 1
            t0 = time.perf_counter()
            try:
                async with session.get(url, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors[str(resp.status)] = errors.get(str(resp.status), 0) + 1
                        continue
            except Exception as exc:  # noqa: BLE001 - every failure is counted, none stops the run
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                continue
            latencies.append(time.perf_counter() - t0)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    ok = len(latencies)
    return {"url": url, "clients": clients, "seconds": round(elapsed, 2), "ok": ok,
            "errors": sum(errors.values()), "error_kinds": errors,
            "req_s": round(ok / elapsed, 1) if elapsed else 0.0,
            "p50_ms": round(percentile(latencies, 0.50) * 1000, 2) if ok else None,
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 2) if ok else None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--max-requests", type=int, default=200_000)
    ap.add_argument("--header", action="append", default=[])
    args = ap.parse_args()
    headers = dict(h.split(":", 1) for h in args.header)
    result = asyncio.run(run(args.url, args.clients, min(args.duration, 60.0), args.max_requests, headers))
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()

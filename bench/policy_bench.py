"""Micro-benchmark: the cost of a policy check per request, cached and uncached, with the default
rules and with an operator's file whose rules read the caller's project and user; and of reading the
caller's identity from the noauth headers. Shows that neither is a hot spot of a read request (the
floor of a read is ~100 us).

    python bench/policy_bench.py [--seconds 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp.test_utils import make_mocked_request

from rayborg.api.auth import NoAuth
from rayborg.api.context import RequestContext, with_implied
from rayborg.api.policy import PolicyEnforcer

OPERATOR_FILE = """\
"cyborg:arq:get_all": "project_id:p-0 or role:admin"
"cyborg:arq:create": "user_id:u-1 or rule:project_member_api"
"""
PROJECTS = 100  # distinct callers cycled through: the operator rules cache one answer per project/user


def per_call_us(fn: Callable[[int], object], seconds: float) -> float:
    """Median of 5 rounds of the mean time of one call (us)."""
    rounds = []
    for _ in range(5):
        n, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds / 5:
            for i in range(200):
                fn(n + i)
            n += 200
        rounds.append(elapsed / n * 1e6)
    return sorted(rounds)[2]


def callers() -> list[RequestContext]:
    return [RequestContext(user_id=f"u-{i}", project_id=f"p-{i}", roles=with_implied(frozenset({"member"})))
            for i in range(PROJECTS)]


def policy_rows(seconds: float) -> list[tuple[str, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "policy.yaml"
        path.write_text(OPERATOR_FILE)
        enforcers = {"default rules": PolicyEnforcer(), "operator file": PolicyEnforcer(str(path))}
        ctxs = callers()
        rows = []
        for label, enforcer in enforcers.items():
            for rule in ("cyborg:arq:get_all", "cyborg:arq:create", "cyborg:device:get_all"):
                reads = sorted(enforcer.reads(rule) or [])
                cached = per_call_us(lambda i: enforcer.allowed(rule, ctxs[i % PROJECTS]), seconds)
                uncached = per_call_us(lambda i: enforcer.check(rule, ctxs[i % PROJECTS]), seconds)
                rows.append((f"{label:13} {rule:22} reads {','.join(reads):18} cached", cached))
                rows.append((f"{label:13} {rule:22} reads {','.join(reads):18} uncached", uncached))
        return rows


def identify_row(seconds: float) -> tuple[str, float]:
    auth = NoAuth(["service"])
    request = make_mocked_request("GET", "/v2/accelerator_requests", headers={
        "X-User-Id": "u-1", "X-Project-Id": "4e01a8e052b442e4be6720dd82f0ef77", "X-Roles": "member,reader",
        "X-Auth-Token": "notused"})
    loop = asyncio.new_event_loop()

    def identify(_: int) -> None:
        coro = auth.identify(request)
        try:
            coro.send(None)  # completes without awaiting anything
        except StopIteration:
            pass

    try:
        return "noauth identify (4 identity headers, checked)", per_call_us(identify, seconds)
    finally:
        loop.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=0.5, help="time per measurement")
    args = parser.parse_args()
    for label, us in [*policy_rows(args.seconds), identify_row(args.seconds)]:
        print(f"{label:78} {us:9.2f} us")


if __name__ == "__main__":
    main()

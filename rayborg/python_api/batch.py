"""Batch programming: one bitstream onto many deployables through their hosts' agents, with bounded
parallelism per host and overall, one result per device as the calls finish.

Runs in the caller's process (a Ray driver). Nothing is left marked as being programmed: a device
is only ever "programming" inside its HostAgent's call, and on Ctrl-C no new call starts while those
already running finish (a second Ctrl-C cancels them; the agent's `finally` unmarks the device).
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

HOST_CHECK_INTERVAL = 1.0


@dataclass
class ProgramResult:
    """One device's outcome: `status` is ok | failed | refused | cancelled."""

    deployable: str
    host: str
    status: str
    error: str | None = None
    duration: float = 0.0
    deployable_uuid: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ProgramResults(list):
    """The per-device results of a batch (a list), with `interrupted` set after Ctrl-C."""

    def __init__(self, results=(), interrupted: bool = False, wall_seconds: float = 0.0):
        super().__init__(results)
        self.interrupted = interrupted
        self.wall_seconds = wall_seconds

    @property
    def ok(self) -> list[ProgramResult]:
        return [r for r in self if r.ok]

    @property
    def failed(self) -> list[ProgramResult]:
        return [r for r in self if not r.ok]

    def __repr__(self) -> str:
        by = defaultdict(int)
        for r in self:
            by[r.status] += 1
        return (
            f"ProgramResults({len(self)} devices: {dict(by)}, {self.wall_seconds:.2f}s"
            f"{', interrupted' if self.interrupted else ''})"
        )


def alive_hosts() -> set[str]:
    import ray

    from rayborg.actors.supervisor import node_hostname

    return {node_hostname(n) for n in ray.nodes() if n["Alive"]}


def run_batch(
    targets: list[dict[str, Any]],
    bitstream: str,
    *,
    refused: list[ProgramResult],
    parallelism_per_host: int,
    parallelism: int,
    timeout: float | None,
    namespace: str,
) -> Iterator[ProgramResult]:
    """Yield a ProgramResult per target (refused ones first), as the agents' calls finish."""
    import ray

    from rayborg.actors.runtime_config import host_agent_name

    yield from refused
    queues: dict[str, deque] = defaultdict(deque)
    for t in targets:
        queues[t["host"]].append(t)
    agents: dict[str, Any] = {}
    alive = alive_hosts()
    for host in list(queues):
        reason = None
        if host not in alive:
            reason = f"host {host} is not in the Ray cluster"
        else:
            try:
                agents[host] = ray.get_actor(host_agent_name(host), namespace=namespace)
            except ValueError:
                reason = f"host {host} has no rayborg agent"
        if reason:
            for t in queues.pop(host):
                yield ProgramResult(t["deployable"], host, "failed", reason, 0.0, t.get("deployable_uuid"))
    inflight: dict[Any, tuple[dict[str, Any], float]] = {}  # ref -> (target, started)
    per_host: dict[str, int] = defaultdict(int)
    stopping = False
    last_check = time.monotonic()

    def submit() -> None:
        while not stopping and len(inflight) < parallelism:
            host = next((h for h, q in queues.items() if q and per_host[h] < parallelism_per_host), None)
            if host is None:
                return
            t = queues[host].popleft()
            ref = agents[host].program.remote(t["driver"], t["deployable"], bitstream)
            inflight[ref] = (t, time.monotonic())
            per_host[host] += 1

    def finished(ref, status: str, error: str | None, duration: float | None = None) -> ProgramResult:
        t, started = inflight.pop(ref)
        per_host[t["host"]] -= 1
        return ProgramResult(
            t["deployable"],
            t["host"],
            status,
            error,
            time.monotonic() - started if duration is None else duration,
            t.get("deployable_uuid"),
        )

    def cancel_pending(reason: str) -> Iterator[ProgramResult]:
        for host in list(queues):
            while queues[host]:
                t = queues[host].popleft()
                yield ProgramResult(t["deployable"], host, "cancelled", reason, 0.0, t.get("deployable_uuid"))

    interrupted = 0
    while inflight or any(queues.values()):
        try:
            submit()
            if not inflight:
                break
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=0.25)
            for ref in ready:
                try:
                    out = ray.get(ref)
                    yield finished(ref, "ok" if out["ok"] else "failed", out["error"], out.get("duration"))
                except ray.exceptions.TaskCancelledError:
                    yield finished(ref, "cancelled", "interrupted while programming")
                except Exception as exc:  # noqa: BLE001 - agent died for good, node gone, ...
                    yield finished(ref, "failed", f"host agent call failed: {type(exc).__name__}: {exc}")
            now = time.monotonic()
            if timeout is not None:
                for ref, (t, started) in list(inflight.items()):
                    if now - started > timeout:
                        ray.cancel(ref)
                        yield finished(ref, "failed", f"timed out after {timeout:g}s")
            if now - last_check > HOST_CHECK_INTERVAL:
                last_check = now
                alive = alive_hosts()
                for ref, (t, _) in list(inflight.items()):
                    if t["host"] not in alive:
                        ray.cancel(ref)
                        yield finished(ref, "failed", f"host {t['host']} left the cluster mid-batch")
                for host in [h for h in queues if h not in alive]:
                    for t in queues.pop(host):
                        yield ProgramResult(
                            t["deployable"],
                            host,
                            "failed",
                            f"host {host} left the cluster mid-batch",
                            0.0,
                            t.get("deployable_uuid"),
                        )
        except KeyboardInterrupt:
            interrupted += 1
            if interrupted == 1:
                stopping = True  # let the running calls finish; start no new one
                yield from cancel_pending("cancelled (Ctrl-C) before programming started")
            else:
                for ref in list(inflight):
                    ray.cancel(ref)
    if interrupted:
        raise KeyboardInterrupt

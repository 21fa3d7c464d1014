"""Batch programming: one bitstream onto many deployables through their hosts' agents, with bounded
parallelism per host and overall, one result per device as the calls finish.

Runs in the caller's process (a Ray driver). Nothing is left marked as being programmed: a device
is only ever "programming" inside its HostAgent's call, and on Ctrl-C no new call starts while those
already running finish (a second Ctrl-C cancels them; the agent's `finally` unmarks the device).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

HOST_CHECK_INTERVAL = 1.0
log = logging.getLogger("rayborg.program")


@dataclass
class ProgramResult:
    """One device's outcome: `status` is ok | failed | refused | cancelled."""

    deployable: str
    host: str
    status: str
    error: str | None = None
    duration: float = 0.0
    deployable_uuid: str | None = None
    device_uuid: str | None = None

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


def result_for(t: dict[str, Any], status: str, error: str | None, duration: float = 0.0) -> ProgramResult:
    return ProgramResult(
        t["deployable"], t["host"], status, error, duration, t.get("deployable_uuid"), t.get("device_uuid")
    )


def log_result(r: ProgramResult, bitstream: str) -> None:
    fields = {"host": r.host, "deployable": r.deployable, "device": r.device_uuid}
    if r.ok:
        log.debug("programmed %s in %.2fs", bitstream, r.duration, extra=fields)
    else:
        log.warning("programming %s: %s: %s", bitstream, r.status, r.error, extra=fields)


def run_batch(
    targets: list[dict[str, Any]],
    bitstream: str,
    *,
    refused: list[ProgramResult],
    parallelism_per_host: int,
    parallelism: int,
    timeout: float | None,
    namespace: str,
    sink: list | None = None,
) -> Iterator[ProgramResult]:
    """Yield a ProgramResult per target (refused ones first), as the agents' calls finish.

    Every result passes one `yield`, inside the Ctrl-C handler's reach, and is appended to `sink`
    (if given) before it is yielded: a caller whose own frame gets the KeyboardInterrupt throws it
    in here (`it.throw`) and loses nothing."""
    import ray

    from rayborg.actors.runtime_config import host_agent_name

    done: deque[ProgramResult] = deque(refused)  # results not handed out yet
    queues: dict[str, deque] = defaultdict(deque)
    for t in targets:
        queues[t["host"]].append(t)
    agents: dict[str, Any] = {}
    inflight: dict[Any, tuple[dict[str, Any], float]] = {}  # ref -> (target, started)
    per_host: dict[str, int] = defaultdict(int)
    stopping = False
    last_check = time.monotonic()

    def fail_host(host: str, reason: str) -> None:
        done.extend(result_for(t, "failed", reason) for t in queues.pop(host, ()))

    def find_agents() -> None:
        alive = alive_hosts()
        for host in list(queues):
            if host not in alive:
                fail_host(host, f"host {host} is not in the Ray cluster")
                continue
            try:
                agents[host] = ray.get_actor(host_agent_name(host), namespace=namespace)
            except ValueError:
                fail_host(host, f"host {host} has no rayborg agent")

    def submit() -> None:
        while not stopping and len(inflight) < parallelism:
            host = next((h for h, q in queues.items() if q and per_host[h] < parallelism_per_host), None)
            if host is None:
                return
            t = queues[host].popleft()
            ref = agents[host].program.remote(t["driver"], t["deployable"], bitstream)
            inflight[ref] = (t, time.monotonic())
            per_host[host] += 1

    def finished(ref, status: str, error: str | None, duration: float | None = None) -> None:
        t, started = inflight.pop(ref)
        per_host[t["host"]] -= 1
        took = time.monotonic() - started if duration is None else duration
        done.append(result_for(t, status, error, took))

    def collect() -> None:
        ready, _ = ray.wait(list(inflight), num_returns=1, timeout=0.25)
        for ref in ready:
            try:
                out = ray.get(ref)
                finished(ref, "ok" if out["ok"] else "failed", out["error"], out.get("duration"))
            except ray.exceptions.TaskCancelledError:
                finished(ref, "cancelled", "interrupted while programming")
            except Exception as exc:  # noqa: BLE001 - agent died for good, node gone, ...
                finished(ref, "failed", f"host agent call failed: {type(exc).__name__}: {exc}")

    def check_deadlines_and_hosts() -> None:
        nonlocal last_check
        now = time.monotonic()
        if timeout is not None:
            for ref, (t, started) in list(inflight.items()):
                if now - started > timeout:
                    ray.cancel(ref)
                    finished(ref, "failed", f"timed out after {timeout:g}s")
        if now - last_check > HOST_CHECK_INTERVAL:
            last_check = now
            alive = alive_hosts()
            for ref, (t, _) in list(inflight.items()):
                if t["host"] not in alive:
                    ray.cancel(ref)
                    finished(ref, "failed", f"host {t['host']} left the cluster mid-batch")
            for host in [h for h in queues if h not in alive]:
                fail_host(host, f"host {host} left the cluster mid-batch")

    interrupted = 0
    looked_up = False
    handed: set[str] = set()
    while True:
        try:
            while done:
                r = done.popleft()
                if sink is not None:
                    sink.append(r)
                handed.add(r.deployable)
                log_result(r, bitstream)
                yield r
            if not looked_up:
                looked_up = True
                find_agents()
                continue
            submit()
            if not inflight:  # nothing queued either (submit starts one whenever it may)
                # A Ctrl-C between two lines above may have dropped a target on the floor: it
                # still gets a result.
                lost = [t for t in targets if t["deployable"] not in handed]
                if not lost:
                    break
                done.extend(result_for(t, "cancelled", "interrupted (Ctrl-C); outcome unknown") for t in lost)
            collect()
            check_deadlines_and_hosts()
        except KeyboardInterrupt:
            interrupted += 1
            if interrupted == 1:
                stopping = True  # let the running calls finish; start no new one
                for host in list(queues):
                    done.extend(
                        result_for(t, "cancelled", "cancelled (Ctrl-C) before programming started")
                        for t in queues.pop(host)
                    )
            else:
                for ref in list(inflight):
                    ray.cancel(ref)
    if interrupted:
        raise KeyboardInterrupt

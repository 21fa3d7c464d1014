"""Many simulated hosts reporting through Ray to a real PlacementSync, against a real Placement whose
own access log says how many calls it answered and how long it spent on them.

Used by bench/runtime_bench.py's `placement_sync_cost`. Real HostAgents are one worker process each,
too heavy for 200 on a small box, so one stand-in actor per Ray node plays that node's share of the
hosts: each simulated host discovers with the fake driver and sends its report to PlacementSync's
`report` as JSON, exactly as `HostAgent._sweep_locked` does, all hosts at once.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import ray

from service_starters import Placement

NODE_RESOURCE = "bench_node_{}"  # one custom resource per Ray node: pins actors to it
# The access log line gunicorn writes after answering: method, status, microseconds spent.
ACCESS_LOG_FORMAT = "%(m)s %(s)s %(D)s"


@dataclass
class PlacementLoad:
    """What Placement answered in a window of its access log."""

    calls: Counter[str]
    busy_s: float  # the sum of its own answering times (one sync worker: they never overlap)

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    @property
    def writes(self) -> int:
        return self.calls["PUT"] + self.calls["POST"] + self.calls["DELETE"]


class CountedPlacement(Placement):
    """A real Placement (tests/service_starters.py) with gunicorn's access log on."""

    @property
    def access_log(self) -> Path:
        return self.work / "access.log"

    def start(self, keep_db: bool = False) -> CountedPlacement:
        # GunicornService passes our environment on; gunicorn reads extra options from this variable.
        saved = os.environ.get("GUNICORN_CMD_ARGS")
        os.environ["GUNICORN_CMD_ARGS"] = (f"--access-logfile {self.access_log} "
                                           f"--access-logformat '{ACCESS_LOG_FORMAT}'")
        try:
            super().start(keep_db)
        finally:
            if saved is None:
                del os.environ["GUNICORN_CMD_ARGS"]
            else:
                os.environ["GUNICORN_CMD_ARGS"] = saved
        return self

    def mark(self) -> int:
        """The log's length now: calls after this belong to the next window."""
        self._settle()
        return self.access_log.stat().st_size if self.access_log.exists() else 0

    def since(self, mark: int) -> PlacementLoad:
        self._settle()
        with open(self.access_log, "rb") as log:
            log.seek(mark)
            lines = log.read().decode().split()
        calls: Counter[str] = Counter()
        busy_us = 0
        for method, _status, micros in zip(lines[0::3], lines[1::3], lines[2::3]):
            calls[method] += 1
            busy_us += int(micros)
        return PlacementLoad(calls, busy_us / 1e6)

    def _settle(self) -> None:
        """gunicorn logs just after the answer went out: wait until the log stops growing."""
        size = -1
        while self.access_log.exists() and self.access_log.stat().st_size != size:
            size = self.access_log.stat().st_size
            time.sleep(0.2)


@contextmanager
def ray_nodes(count: int) -> Iterator[None]:
    """`count` Ray nodes on this box (ray.cluster_utils.Cluster), node k holding resource bench_node_k;
    this process joins it and leaves (stopping what it started) at the end."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # The nodes' workers import this module (the stand-ins' class) and service_starters' folder.
    here = Path(__file__).resolve().parent
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(here), str(here.parent / "tests")] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    from ray.cluster_utils import Cluster

    common = {"include_dashboard": False, "object_store_memory": 80 * 1024**2}
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "resources": {NODE_RESOURCE.format(0): 1}, **common})
    try:
        for k in range(1, count):
            cluster.add_node(num_cpus=0, resources={NODE_RESOURCE.format(k): 1}, **common)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, namespace="rayborg-bench")
        try:
            yield
        finally:
            ray.shutdown()
    finally:
        cluster.shutdown()


def on_node(k: int) -> dict:
    return {"resources": {NODE_RESOURCE.format(k): 0.001}}


@ray.remote(num_cpus=0, max_concurrency=4)
class HostAgentStandIns:
    """The HostAgents of many simulated hosts on one Ray node."""

    def __init__(self, sync, hosts: dict[str, int], devices: int):
        self.sync = sync
        self.seeds = hosts  # hostname -> fake driver seed (distinct PCI addresses, so RP names)
        self.drivers = {name: self._drivers(name, devices) for name in hosts}

    def _drivers(self, hostname: str, devices: int):
        from rayborg.drivers.registry import HostDrivers

        return HostDrivers(hostname, drivers=["fake"],
                           options={"fake": {"spec": f"fpga:{devices}x2", "seed": self.seeds[hostname]}})

    def resize(self, hostname: str, devices: int) -> None:
        """A card plugged in (or pulled): the host's next report has `devices` devices."""
        self.drivers[hostname] = self._drivers(hostname, devices)

    async def report(self, hostnames: list[str] | None = None) -> int:
        """Every (or the named) simulated host discovers and reports, all at once, as each HostAgent
        does at start or when forced; returns when PlacementSync has applied and pushed them all."""
        async def one(name: str) -> None:
            report = await asyncio.to_thread(self.drivers[name].discover)
            await self.sync.report.remote(report.model_dump(mode="json"))

        names = [n for n in self.drivers if hostnames is None or n in hostnames]
        await asyncio.gather(*(one(n) for n in names))
        return len(names)

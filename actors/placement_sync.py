"""PlacementSync: the named, detached singleton that is the only writer of the device tree.

Each host report is applied to the store in one transaction, then the dirty part of the tree is
pushed to Placement. When Placement is down the dirty marks stay in the store and a retry step
(`wake_loop`, as the binders' steps) pushes them with backoff, so the daemon keeps serving and
converges once Placement is back. A restart resumes from the store (marks and tombstones), never
from memory.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import time
from typing import Any

import ray

from rayborg.actors import metrics, wake_loop
from rayborg.actors.runtime_config import PLACEMENT_SYNC_NAME, RuntimeConfig

log = logging.getLogger("rayborg.placement_sync")


def placement_client(config: RuntimeConfig):
    from rayborg.actors.placement_client import PlacementClient

    if not config.placement_url and not config.keystone.get("auth_url"):
        return None
    if config.keystone.get("auth_url"):
        from rayborg.actors.keystone_session import service_session

        return PlacementClient(url=config.placement_url, session=service_session(config.keystone))
    return PlacementClient(url=config.placement_url, token=config.placement_token)


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1, max_concurrency=16)
class PlacementSync:
    async def __init__(self, config: RuntimeConfig):
        from rayborg.store.engine import Store

        config.setup_logging()
        self.config = config
        self.store = Store(config.database_url)
        self.placement = placement_client(config)
        self._lock = asyncio.Lock()  # one report / push at a time: a single writer, in order
        self._wake = asyncio.Event()
        self.reports_applied = 0
        self.last_push: dict[str, Any] = {}
        self.placement_down_since: float | None = None
        self.apply_seconds: list[float] = []
        # Reports being handled now, by call: (hostname, "queued" | "applying" | "pushing"). Operators
        # see a stuck report; fault tests wait for a phase before killing an actor in it.
        self._reports: dict[int, tuple[str, str]] = {}
        self._report_ids = itertools.count()
        self._wake.set()  # resume whatever a previous incarnation left dirty
        self._retry_task = wake_loop.start(self._retry_step, self._wake, retry=config.retry_interval)

    async def report(self, report: dict[str, Any]) -> dict[str, Any]:
        """Apply one HostReport (as JSON-able dict) and push its host's changes to Placement."""
        from rayborg.drivers.base import HostReport

        parsed = HostReport.model_validate(report)
        call = next(self._report_ids)
        self._reports[call] = (parsed.hostname, "queued")
        try:
            async with self._lock:
                self._reports[call] = (parsed.hostname, "applying")
                diff, pushed = await self._apply(parsed, call)
        finally:
            del self._reports[call]
        return {"hostname": parsed.hostname, "added": diff.added, "changed": diff.changed,
                "removed": diff.removed, "devices_removed": diff.devices_removed, "pushed": pushed}

    async def _apply(self, parsed, call: int):
        from rayborg.store.host_reports import apply_report

        started = time.perf_counter()
        diff = await asyncio.to_thread(self.store.transact, apply_report, parsed)
        self.apply_seconds = (self.apply_seconds + [time.perf_counter() - started])[-100:]
        metrics.report_applied(parsed.hostname, len(parsed.devices), self.apply_seconds[-1])
        self.reports_applied += 1
        log.info("host %s: report applied (+%d ~%d -%d deployables, -%d devices)", parsed.hostname,
                 len(diff.added), len(diff.changed), len(diff.removed), diff.devices_removed)
        self._reports[call] = (parsed.hostname, "pushing")
        return diff, await self._push(parsed.hostname)

    async def nudge(self) -> None:
        """Something in the store changed (e.g. a device was disabled): push soon."""
        self._wake.set()

    async def sync_now(self) -> dict[str, Any]:
        async with self._lock:
            await self._push(None)
        return self.last_push

    async def host_lost(self, hostname: str) -> None:
        """Its Ray node left: keep its devices but let nothing new bind there."""
        from rayborg.store.hosts import mark_lost

        await asyncio.to_thread(self.store.transact, mark_lost, hostname)
        self._wake.set()  # its devices' inventory gets reserved in Placement
        log.warning("host %s left the cluster: its devices are kept but not bound", hostname)

    async def _push(self, hostname: str | None) -> bool:
        """Push dirty state; False (and the retry loop armed) when Placement is unavailable."""
        from rayborg.actors.placement_client import PlacementUnavailable
        from rayborg.actors.placement_push import push

        if self.placement is None:
            return False
        try:
            result = await asyncio.to_thread(push, self.store, self.placement, hostname)
        except PlacementUnavailable as exc:
            if self.placement_down_since is None:
                self.placement_down_since = time.time()
                log.warning("Placement unavailable (%s): changes stay queued in the store", exc)
            self._wake.set()
            return False
        if self.placement_down_since is not None:
            log.info("Placement is back after %.1fs", time.time() - self.placement_down_since)
            self.placement_down_since = None
        self.last_push = {"at": time.time(), "pushed": result.pushed, "deleted": result.deleted,
                          "waiting_for_compute_node": result.waiting_for_compute_node, "errors": result.errors}
        if not result.complete:
            self._wake.set()  # a compute node may appear later; Placement may accept a retry
        return result.complete

    async def _retry_step(self) -> bool:
        """Push whatever is dirty; False (retried after a backoff) while Placement refuses or a
        compute node is missing. Without Placement there is nothing to retry."""
        async with self._lock:
            return await self._push(None) or self.placement is None

    def status(self) -> dict[str, Any]:
        return {"name": PLACEMENT_SYNC_NAME, "pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id(),
                "hostname": socket.gethostname(), "reports_applied": self.reports_applied,
                "placement": self.config.placement_url or ("keystone" if self.placement else None),
                "placement_down_since": self.placement_down_since, "last_push": self.last_push,
                "reports": sorted(self._reports.values()),
                "apply_seconds_p50": sorted(self.apply_seconds)[len(self.apply_seconds) // 2]
                if self.apply_seconds else None}

"""Push rayborg's part of a standalone consumer's allocations into Placement.

`push` reads the consumer's allocations, replaces the RPs rayborg put there before (`pushed`) with
what its ARQs hold now (`desired`), keeps every other RP of the consumer as it was, and writes the
result with the consumer generation just read (a 409 concurrent_update re-reads and retries).
Placement refusing the write for capacity (someone else's allocation fills the RP) is an
`AllocationRefused`; Placement unreachable stays a `PlacementUnavailable` for the caller's backoff.
`AllocationPusher` is the binder's part that drives it from the store's outbox.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable

from rayborg.actors.placement_client import (GENERATION_RETRIES, PlacementClient, PlacementError,
                                             PlacementUnavailable)
from rayborg.store import standalone_allocations as outbox
from rayborg.store.engine import Store
from rayborg.store.standalone_allocations import Allocations, Pending

log = logging.getLogger("rayborg.standalone_placement")

CONSUMER_TYPE = "RAYBORG"  # consumer type of consumers rayborg creates (microversion 1.38)
DEFAULT_OWNER = "rayborg"  # project/user of a new consumer whose ARQs name no project
BIND_PLACEMENT_ATTEMPTS = 3  # Placement unreachable this many times in a row fails a standalone bind
MAX_BACKOFF = 30.0


class AllocationRefused(PlacementError):
    """Placement would not take the allocation (capacity, unknown RP, bad request)."""


def _allocations(body: dict) -> Allocations:
    return {rp: dict(a.get("resources", {})) for rp, a in body.get("allocations", {}).items()}


def push(client: PlacementClient, pending: Pending) -> Allocations:
    """Make Placement hold `pending.desired` as rayborg's part of the consumer's allocations; the
    part now pushed (= desired). Writes nothing when Placement already matches."""
    what = f"allocations of consumer {pending.consumer}"
    for attempt in range(GENERATION_RETRIES):
        resp = client._request("GET", f"/allocations/{pending.consumer}")
        if resp.status_code != 200:
            raise client._error(resp, f"read {what}")
        body = resp.json()
        current = _allocations(body)
        merged = {rp: res for rp, res in current.items() if rp not in pending.pushed}
        merged.update(pending.desired)
        if merged == current:
            return pending.desired
        if not merged:
            resp = client._request("DELETE", f"/allocations/{pending.consumer}")
            if resp.status_code in (204, 404):
                return pending.desired
        else:
            resp = client._request("PUT", f"/allocations/{pending.consumer}", {
                "allocations": {rp: {"resources": res} for rp, res in merged.items()},
                "consumer_generation": body.get("consumer_generation"),
                "project_id": body.get("project_id") or pending.project_id or DEFAULT_OWNER,
                "user_id": body.get("user_id") or DEFAULT_OWNER,
                "consumer_type": body.get("consumer_type") or CONSUMER_TYPE,
            })
            if resp.status_code == 204:
                log.info("Placement: consumer %s now holds %s (rayborg's part)", pending.consumer,
                         pending.desired or "nothing")
                return pending.desired
        err = client._error(resp, f"write {what}")
        if resp.status_code == 409 and err.code == "placement.concurrent_update":
            time.sleep(random.uniform(0, 0.05 * (attempt + 1)))
            continue
        raise AllocationRefused(str(err), err.status, err.code)
    raise AllocationRefused(f"write {what}: consumer generation kept changing", 409,
                            "placement.concurrent_update")


class AllocationPusher:
    """A binder's pushes of the standalone consumers it owns: at once for a bind (`allocate`) or a
    release (`push`), and in `step` for every consumer the outbox says is dirty (after unbinds,
    deletes, failed binds, a restart, a push that failed)."""

    def __init__(self, store: Store, placement: PlacementClient, owns: Callable[[str | None], bool],
                 retry_interval: float):
        self.store = store
        self.placement = placement
        self.owns = owns
        self.retry_interval = retry_interval
        self.pushed = 0
        self._locks: dict[str, asyncio.Lock] = {}

    async def allocate(self, consumer: str) -> str | None:
        """Push the consumer's allocation now, retrying while Placement is unreachable; None when
        Placement holds it, else why not (the bind then fails cleanly)."""
        delay = self.retry_interval
        for attempt in range(BIND_PLACEMENT_ATTEMPTS):
            try:
                await self.push(consumer)
                return None
            except AllocationRefused as exc:
                return str(exc)
            except PlacementUnavailable as exc:
                if attempt == BIND_PLACEMENT_ATTEMPTS - 1:
                    return str(exc)
                log.warning("consumer %s: %s; retrying in %.1f s", consumer, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
        return None

    async def push(self, consumer: str) -> None:
        """Bring Placement in line with the consumer's standalone ARQs (one push at a time per consumer)."""
        async with self._locks.setdefault(consumer, asyncio.Lock()):
            pending = await asyncio.to_thread(self.store.query, outbox.pending, consumer)
            pushed = await asyncio.to_thread(push, self.placement, pending)
            clean = await asyncio.to_thread(self.store.transact, outbox.record_pushed, consumer,
                                            pending.version, pushed)
            self.pushed += 1
        if clean:
            self._locks.pop(consumer, None)

    async def step(self) -> bool:
        """Push every dirty consumer this binder owns; False when some are left to retry."""
        done = True
        for consumer in await asyncio.to_thread(self.store.query, outbox.dirty):
            if not self.owns(consumer):
                continue
            try:
                await self.push(consumer)
            except PlacementError as exc:
                log.warning("consumer %s: allocation not pushed (%s): retrying", consumer, exc)
                done = False
            except Exception:  # noqa: BLE001 - a store hiccup: next round
                log.exception("consumer %s: allocation push failed", consumer)
                done = False
        return done

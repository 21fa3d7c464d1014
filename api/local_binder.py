"""The in-process binder: finishes binds in the background of the API process (no Ray needed).

The bind PATCH has already moved the ARQs to BindStarted; `submit` starts one asyncio task per PATCH
that runs `arq_state.finish_binds` in a worker thread (claiming attach handles -> Bound or
BindFailed). The Ray binder pool offers the same coroutines and replaces it under `rayborg serve`.

Nothing lives only in memory, as with the Ray binder: `start` (an app startup hook) finishes the
ARQs a previous process left in BindStarted, and every `redrive_interval` the binds idle in
BindStarted that nobody here works on (a `_finish` that failed on a store error) are taken up again.
"""

from __future__ import annotations

import asyncio
import logging
import time

from rayborg.actors import metrics
from rayborg.actors.device_prep import prepares
from rayborg.store import arq_state, bind_plan
from rayborg.store.bind_plan import Releasing
from rayborg.store.engine import Store

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 10.0
REDRIVE_INTERVAL_S = 15.0  # as the Ray binders' default (RuntimeConfig.redrive_interval)


class LocalBinder:
    def __init__(self, store: Store, redrive_interval: float = REDRIVE_INTERVAL_S):
        self.store = store
        self.redrive_interval = redrive_interval
        self.redriven = 0
        self._tasks: set[asyncio.Task] = set()
        self._active: set[str] = set()  # ARQs a task of ours is finishing: never re-driven twice
        self._redrive_task: asyncio.Task | None = None

    async def start(self) -> None:
        """Resume every bind left in BindStarted, then re-drive idle ones periodically."""
        try:
            left = await self.store.aquery(bind_plan.in_flight)
        except Exception:  # noqa: BLE001 - the periodic re-drive will find them
            log.exception("could not look for binds left in BindStarted")
            left = []
        if left:
            log.info("resuming %d binds left in BindStarted", len(left))
            self._submit([u for u, _ in left])
        self._redrive_task = asyncio.get_running_loop().create_task(self._redrive_loop(), name="bind-redrive")

    async def submit(self, arq_uuids: list[str], instances: dict[str, str | None] | None = None) -> None:
        """Finish the binds of these BindStarted ARQs in the background; returns at once."""
        self._submit(arq_uuids)

    def _submit(self, arq_uuids: list[str]) -> None:
        self._active.update(arq_uuids)
        task = asyncio.get_running_loop().create_task(self._finish(arq_uuids), name=f"bind-{arq_uuids[0]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: self._active.difference_update(arq_uuids))

    async def _finish(self, arq_uuids: list[str]) -> None:
        started = time.perf_counter()
        try:  # one transaction for the PATCH's ARQs (abandoned: unbound or deleted meanwhile)
            states = await self.store.atransact(arq_state.finish_binds, arq_uuids)
        except Exception:  # keep the task quiet; the ARQs stay BindStarted until re-driven
            log.exception("binds of %s crashed", ", ".join(arq_uuids))
            return
        elapsed = time.perf_counter() - started
        for arq_uuid, state in states.items():
            log.info("ARQ %s: %s", arq_uuid, state, extra={"arq": arq_uuid})
            metrics.bind_finished(state, elapsed)

    async def _redrive_loop(self) -> None:
        while True:
            await asyncio.sleep(self.redrive_interval)
            try:
                idle = await self.store.aquery(bind_plan.in_flight, self.redrive_interval)
            except Exception:  # noqa: BLE001 - the store is unreachable: next round
                log.exception("could not look for idle binds")
                continue
            mine = [u for u, _ in idle if u not in self._active]
            if mine:
                log.warning("re-driving %d binds idle in BindStarted", len(mine))
                self.redriven += len(mine)
                self._submit(mine)

    async def released(self, held: Releasing) -> None:
        """No host agents and no Placement without Ray: what drivers prepared for released handles
        (e.g. mdevs) stays until an operator removes it (standalone binds allocate nothing in
        Placement here)."""
        for handle in held.handles:
            if prepares(handle.driver_name):
                log.warning("%s handle %s on %s released but not unprepared (no Ray runtime)", handle.driver_name,
                            handle.uuid, handle.hostname)

    async def drain(self) -> None:
        """Wait until every bind submitted so far (and any submitted meanwhile) is done."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Stop re-driving, let binds in flight finish (short transactions), then give up on stragglers."""
        if self._redrive_task is not None:
            self._redrive_task.cancel()
            await asyncio.gather(self._redrive_task, return_exceptions=True)
        try:
            await asyncio.wait_for(self.drain(), CLOSE_TIMEOUT_S)
        except TimeoutError:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

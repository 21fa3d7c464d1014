"""The in-process binder: finishes binds in the background of the API process (no Ray needed).

The bind PATCH has already moved the ARQs to BindStarted; `submit` starts one asyncio task per PATCH
that runs `arq_state.finish_binds` in a worker thread (claiming attach handles -> Bound or
BindFailed). The Ray binder pool offers the same three coroutines and replaces it under `rayborg serve`.
"""

from __future__ import annotations

import asyncio
import logging

from rayborg.store import arq_state
from rayborg.store.bind_plan import Releasing
from rayborg.store.engine import Store

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 10.0


class LocalBinder:
    def __init__(self, store: Store):
        self.store = store
        self._tasks: set[asyncio.Task] = set()

    async def submit(self, arq_uuids: list[str], instances: dict[str, str | None] | None = None) -> None:
        """Finish the binds of these BindStarted ARQs in the background; returns at once."""
        task = asyncio.get_running_loop().create_task(self._finish(arq_uuids), name=f"bind-{arq_uuids[0]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish(self, arq_uuids: list[str]) -> None:
        try:  # one transaction for the PATCH's ARQs (abandoned: unbound or deleted meanwhile)
            for arq_uuid, state in (await self.store.atransact(arq_state.finish_binds, arq_uuids)).items():
                log.info("ARQ %s: %s", arq_uuid, state)
        except Exception:  # keep the task quiet; the ARQs stay BindStarted until fail_stuck_binds
            log.exception("binds of %s crashed", ", ".join(arq_uuids))

    async def released(self, held: Releasing) -> None:
        """No host agents and no Placement without Ray: mdevs of released handles stay until an
        operator removes them (standalone binds allocate nothing in Placement here)."""
        for hostname, mdev_uuid, _ in held.mdevs:
            log.warning("mdev %s on %s released but not removed (no Ray runtime)", mdev_uuid, hostname)

    async def drain(self) -> None:
        """Wait until every bind submitted so far (and any submitted meanwhile) is done."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Let binds in flight finish (they are short transactions), then give up on stragglers."""
        try:
            await asyncio.wait_for(self.drain(), CLOSE_TIMEOUT_S)
        except TimeoutError:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

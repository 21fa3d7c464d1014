"""The binder's Nova notification: send the `accelerator-request-bound` events the store owes for
the instances this binder owns (`store/nova_events.py`), many instances in one call."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from rayborg.actors.nova_client import BoundEvent, NovaClient, NovaError
from rayborg.store import nova_events
from rayborg.store.engine import Store

log = logging.getLogger("rayborg.binder")

NOVA_BATCH = 500  # events in one os-server-external-events call at most (an instance's are never split)


class NovaNotifier:
    def __init__(self, store: Store, nova: NovaClient, owns: Callable[[str | None], bool]):
        self.store = store
        self.nova = nova
        self.owns = owns
        self.sent = 0

    async def step(self) -> bool:
        """Send what is owed; False when some events are left to retry."""
        pending = await asyncio.to_thread(self.store.query, nova_events.pending)
        batches: list[list[BoundEvent]] = [[]]
        for instance, arqs in pending.items():
            if not self.owns(instance):
                continue
            if len(batches[-1]) >= NOVA_BATCH:
                batches.append([])
            batches[-1].extend(BoundEvent(instance, u, s) for u, s in arqs)
        done = True
        for batch in filter(None, batches):
            try:
                refused = await asyncio.to_thread(self.nova.send_bound_events, batch)
            except NovaError as exc:
                log.warning("Nova events not delivered (%s): retrying", exc)
                done = False
                continue
            delivered = [e.arq_uuid for e in batch if e.instance_uuid not in refused]
            done = done and not refused
            if delivered:
                await asyncio.to_thread(self.store.transact, nova_events.clear, delivered)
            self.sent += len(delivered)
        return done

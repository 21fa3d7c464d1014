"""The front door's way to the binder actors: same interface as `LocalBinder` (submit, drain,
close), routing all ARQs of one instance to one binder so that its Nova call is one call."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

import ray
from sqlmodel import select

from rayborg.actors.binder import binder_index
from rayborg.actors.runtime_config import NAMESPACE, binder_name, host_agent_name
from rayborg.store.bind_plan import Releasing
from rayborg.store.tables import ExtARQ

log = logging.getLogger(__name__)


def _instances(session, arq_uuids: list[str]) -> dict[str, str | None]:
    return {u: i for u, i in session.exec(select(ExtARQ.uuid, ExtARQ.instance_uuid).where(ExtARQ.uuid.in_(arq_uuids)))}


class RayBinder:
    def __init__(self, store, count: int):
        self.store = store
        self.count = count
        self._binders = [ray.get_actor(binder_name(i), namespace=NAMESPACE) for i in range(count)]
        self._inflight: set[asyncio.Future] = set()

    async def submit(self, arq_uuids: list[str]) -> None:
        owners: dict[int, list[str]] = defaultdict(list)
        for arq_uuid, instance in (await self.store.aquery(_instances, arq_uuids)).items():
            owners[binder_index(instance, self.count)].append(arq_uuid)
        for index, uuids in owners.items():
            self._track(self._binders[index].bind.remote(uuids))

    async def released(self, held: Releasing) -> None:
        """ARQs let go of their devices: remove the mdevs of their MDEV handles on their hosts
        (idempotent on the host side), and wake the binders owning standalone consumers, which
        push those consumers' Placement allocations (the outbox in the store already says what)."""
        for hostname, mdev_uuid, info in held.mdevs:
            try:
                agent = ray.get_actor(host_agent_name(hostname), namespace=NAMESPACE)
            except ValueError:
                log.warning("mdev %s: host %s has no agent; not removed", mdev_uuid, hostname)
                continue
            self._track(agent.remove_mdev.remote(info, mdev_uuid))
        for index in sorted({binder_index(c, self.count) for c in held.consumers}):
            self._track(self._binders[index].sync_allocations.remote())

    def _track(self, ref) -> None:
        fut = asyncio.ensure_future(ref)
        self._inflight.add(fut)
        fut.add_done_callback(self._inflight.discard)

    async def drain(self) -> None:
        while self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)

    async def close(self) -> None:
        await self.drain()

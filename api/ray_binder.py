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
            fut = asyncio.ensure_future(self._binders[index].bind.remote(uuids))
            self._inflight.add(fut)
            fut.add_done_callback(self._inflight.discard)

    async def release_mdevs(self, held: list[tuple[str, str, dict]]) -> None:
        """Remove the mdevs of released MDEV handles on their hosts (idempotent on the host side)."""
        for hostname, mdev_uuid, info in held:
            try:
                agent = ray.get_actor(host_agent_name(hostname), namespace=NAMESPACE)
            except ValueError:
                log.warning("mdev %s: host %s has no agent; not removed", mdev_uuid, hostname)
                continue
            fut = asyncio.ensure_future(agent.remove_mdev.remote(info, mdev_uuid))
            self._inflight.add(fut)
            fut.add_done_callback(self._inflight.discard)

    async def drain(self) -> None:
        while self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)

    async def close(self) -> None:
        await self.drain()

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
    """Binds go to the binders in as few actor calls as possible: the ARQs submitted within one
    turn of the event loop travel together, one call per binder (an actor call costs about a
    millisecond of CPU on each side, several times what finishing a bind in the store does)."""

    def __init__(self, store, count: int):
        self.store = store
        self.count = count
        self._binders = [ray.get_actor(binder_name(i), namespace=NAMESPACE) for i in range(count)]
        self._inflight: set[asyncio.Future] = set()
        self._outgoing: dict[int, list[str]] = defaultdict(list)
        self._sent: dict[int, asyncio.Future] = {}  # binder -> the call the outgoing ARQs will join

    async def bind(self, arq_uuids: list[str], instances: dict[str, str | None] | None = None) -> dict[str, str]:
        """Hand BindStarted ARQs to their binders and wait until they are resolved: uuid -> state
        (`instances`: uuid -> instance when the caller knows; read from the store otherwise)."""
        if instances is None:
            instances = await self.store.aquery(_instances, arq_uuids)
        loop = asyncio.get_running_loop()
        calls = []
        for arq_uuid in arq_uuids:
            index = binder_index(instances.get(arq_uuid), self.count)
            if index not in self._sent:
                self._sent[index] = loop.create_future()
                loop.call_soon(self._flush, index)
            self._outgoing[index].append(arq_uuid)
            calls.append(self._sent[index])
        states: dict[str, str] = {}
        for result in await asyncio.gather(*set(calls)):
            states.update(result)
        return {u: states[u] for u in arq_uuids}

    def _flush(self, index: int) -> None:
        uuids, fut = self._outgoing.pop(index), self._sent.pop(index)
        call = asyncio.ensure_future(self._binders[index].bind.remote(uuids))

        def settle(done: asyncio.Future) -> None:
            if done.cancelled():
                fut.cancel()
            elif done.exception() is not None:
                fut.set_exception(done.exception())
            else:
                fut.set_result(done.result())

        call.add_done_callback(settle)

    async def submit(self, arq_uuids: list[str], instances: dict[str, str | None] | None = None) -> None:
        """`bind` in the background; returns at once."""
        self._track(self.bind(arq_uuids, instances))

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

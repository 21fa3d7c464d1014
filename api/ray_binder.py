"""The front door's way to the binder actors: same interface as `LocalBinder` (submit, drain,
close), routing all ARQs of one instance to one binder so that its Nova call is one call."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

import ray

from rayborg.actors.binder import binder_index
from rayborg.actors.device_prep import prepares
from rayborg.actors.runtime_config import NAMESPACE, binder_name
from rayborg.store import bind_plan
from rayborg.store.bind_plan import Releasing

log = logging.getLogger(__name__)


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
            instances = await self.store.aquery(bind_plan.instances, arq_uuids)
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
        """ARQs let go of their devices: hand what the binders do about it to the binder owning
        each instance (the driver's unprepare of handles whose driver prepares, the push of
        standalone consumers' Placement allocations), one call per binder, none when nothing is
        to be done (a Nova bind of a plain PCI device)."""
        work: dict[int, tuple[list, list[str]]] = defaultdict(lambda: ([], []))
        for handle in held.handles:
            if prepares(handle.driver_name):
                work[binder_index(handle.instance_uuid, self.count)][0].append(handle)
        for consumer in held.consumers:
            work[binder_index(consumer, self.count)][1].append(consumer)
        for index, (handles, consumers) in sorted(work.items()):
            self._track(self._binders[index].released.remote(handles, consumers))

    def _track(self, ref) -> None:
        fut = asyncio.ensure_future(ref)
        self._inflight.add(fut)
        fut.add_done_callback(self._inflight.discard)

    async def drain(self) -> None:
        while self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)

    async def close(self) -> None:
        await self.drain()

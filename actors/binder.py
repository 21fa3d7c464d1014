"""Binder: k of them (`rayborg:binder:<i>`); all ARQs of one instance go to the same binder.

A bind: program the FPGA through the HostAgent when the profile group names a bitstream, claim an
attach handle (one atomic statement, in `store/arq_state.py`), create the mdev for vGPU handles,
mark Bound or BindFailed, then tell Nova (the events of many instances in one call). Nothing lives only in memory:
after a restart the binder finishes the binds it owned that are still in BindStarted and re-sends
the Nova events still marked pending, with backoff while Nova fails.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import zlib
from typing import Any

import ray

from rayborg.actors.placement_sync import placement_client
from rayborg.actors.runtime_config import NAMESPACE, RuntimeConfig, binder_name, host_agent_name

log = logging.getLogger("rayborg.binder")

MAX_BACKOFF = 30.0
BIND_PLACEMENT_ATTEMPTS = 3  # Placement unreachable this many times in a row fails a standalone bind
ALLOCATION_POLL_S = 5.0
BIND_BATCH = 256  # ARQs finished in one transaction at most
NOVA_BATCH = 500  # events in one os-server-external-events call at most (an instance's are never split)


def binder_index(instance_uuid: str | None, count: int) -> int:
    """Stable owner of an instance's ARQs (ARQs without an instance hash by nothing: binder 0)."""
    return zlib.crc32((instance_uuid or "").encode()) % count


def nova_client(config: RuntimeConfig):
    from rayborg.actors.nova_client import NovaClient

    if config.keystone.get("auth_url"):
        from rayborg.actors.keystone_session import service_session

        return NovaClient(url=config.nova_url, session=service_session(config.keystone))
    if config.nova_url:
        return NovaClient(url=config.nova_url, token=config.nova_token)
    return None


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1, max_concurrency=64)
class Binder:
    async def __init__(self, config: RuntimeConfig, index: int):
        from rayborg.store.engine import Store

        config.setup_logging()
        self.config = config
        self.index = index
        self.store = Store(config.database_url)
        self.nova = nova_client(config)
        self.placement = placement_client(config)  # None: no Placement, standalone binds allocate nothing
        self.binds_done = 0
        self.binds_failed = 0
        self.events_sent = 0
        self.latencies: list[float] = []
        self.allocations_pushed = 0
        self._nova_wake = asyncio.Event()
        self._allocation_wake = asyncio.Event()
        self._consumer_locks: dict[str, asyncio.Lock] = {}
        self._bind_queue: list[tuple[str, asyncio.Future]] = []
        self._bind_wake = asyncio.Event()
        self._active: dict[str, asyncio.Future] = {}  # ARQs queued or being bound here -> outcome
        self.redriven = 0
        loop = asyncio.get_running_loop()
        self._bind_task = loop.create_task(self._bind_loop())
        self._redrive_task = loop.create_task(self._redrive_loop())
        self._resume_task = loop.create_task(self._resume())
        self._nova_task = loop.create_task(self._nova_loop())
        self._allocation_task = loop.create_task(self._allocation_loop())
        if index == 0:  # releases the standalone claims of Ray jobs that ended
            self._reap_task = loop.create_task(self.op("reap_loop"))

    # -- binding -------------------------------------------------------------------------------
    async def bind(self, arq_uuids: list[str]) -> dict[str, str]:
        """Finish the binds of ARQs already in BindStarted; returns uuid -> final state.

        The ARQs join a queue that `_bind_loop` drains in batches: ARQs that only need an attach
        handle claimed are finished together in one transaction (with SQLite's single writer, one
        commit per bind was what bounded throughput); those that program an FPGA, create an mdev or
        allocate in Placement first go on as tasks of their own."""
        loop = asyncio.get_running_loop()
        waiting = []
        for arq_uuid in arq_uuids:
            fut = self._active.get(arq_uuid)
            if fut is None:  # else already here (a restarted binder's resume and Ray's retry of the
                # call it was working on): wait for that bind instead of binding, maybe programming, twice
                fut = self._active[arq_uuid] = loop.create_future()
                fut.add_done_callback(lambda _, u=arq_uuid: self._active.pop(u, None))
                self._bind_queue.append((arq_uuid, fut))
            waiting.append(fut)
        self._bind_wake.set()
        outcomes = await asyncio.gather(*(asyncio.shield(f) for f in waiting), return_exceptions=True)
        self._nova_wake.set()
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return dict(zip(arq_uuids, outcomes))

    async def _bind_loop(self) -> None:
        while True:
            await self._bind_wake.wait()
            self._bind_wake.clear()
            while self._bind_queue:
                batch, self._bind_queue = self._bind_queue[:BIND_BATCH], self._bind_queue[BIND_BATCH:]
                try:
                    await self._bind_batch(dict(batch))
                except Exception as exc:  # noqa: BLE001 - a store hiccup: the ARQs stay BindStarted
                    log.exception("bind batch of %d failed", len(batch))
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)

    async def _bind_batch(self, waiting: dict[str, asyncio.Future]) -> None:
        started = time.perf_counter()
        plans, states = await asyncio.to_thread(self.store.transact, _plan_and_finish, list(waiting),
                                                self.placement is not None)
        for arq_uuid, fut in waiting.items():
            plan = plans.get(arq_uuid)
            if arq_uuid in states:
                self._resolved(fut, states[arq_uuid], started)
            elif plan is None or plan.state != "BindStarted":
                self._resolved(fut, "missing" if plan is None else plan.state, started)
            else:
                task = asyncio.get_running_loop().create_task(self._bind_slow(plan))
                task.add_done_callback(lambda t, fut=fut: self._resolved(fut, t, started))

    def _resolved(self, fut: asyncio.Future, outcome, started: float) -> None:
        """Settle one bind's future with its state (or a finished task's result) and count it."""
        from rayborg.actors import metrics

        if isinstance(outcome, asyncio.Task):
            if outcome.cancelled() or outcome.exception() is not None:
                if not fut.done():
                    fut.set_exception(outcome.exception() or asyncio.CancelledError())
                return
            outcome = outcome.result()
        state = str(outcome)
        if state == "Bound":
            self.binds_done += 1
        elif state == "BindFailed":
            self.binds_failed += 1
        elapsed = time.perf_counter() - started
        self.latencies.append(elapsed)
        del self.latencies[:-1000]
        metrics.bind_finished(state, elapsed)
        if not fut.done():
            fut.set_result(state)

    async def _bind_slow(self, plan) -> str:
        """A bind with work before (Placement allocation, programming) or after (mdev) the claim."""
        from rayborg.store import arq_state

        arq_uuid = plan.arq_uuid
        if plan.error:
            return await self._fail(arq_uuid, plan.error)
        if plan.standalone and self.placement is not None:
            # Allocated in Placement before anything else, so that a Nova scheduling from the same
            # Placement can never book the device rayborg chose.
            refused = await self._allocate_standalone(plan.instance_uuid)
            if refused:
                return await self._fail(arq_uuid, f"Placement refused the allocation: {refused}")
        if plan.bitstream_id:
            result = await self._program(plan)
            if not result["ok"]:
                return await self._fail(arq_uuid, f"programming failed: {result['error']}")
        mdev = None
        try:
            if plan.attach_type == "MDEV":
                # The handle is held (the ARQ stays BindStarted) until its mdev exists: a binder
                # killed in between resumes with the same handle instead of leaving a Bound ARQ
                # without a device, and Nova is told only about a usable one.
                held = str(await asyncio.to_thread(self.store.transact, arq_state.hold_handle, arq_uuid))
                if held != "BindStarted":
                    return held
                mdev = await self._create_mdev(plan)
                if "error" in mdev:
                    return await self._fail(arq_uuid, f"mdev creation failed: {mdev['error']}")
            state = str(await asyncio.to_thread(self.store.transact, arq_state.finish_bind, arq_uuid))
        except arq_state.StoreError as exc:  # unbound or deleted while we worked: nothing to finish
            log.info("ARQ %s: bind abandoned: %s", arq_uuid, exc, extra=_fields(plan))
            if mdev and "error" not in mdev:  # the unbind may have run before the mdev existed
                await self._agent(plan.hostname).remove_mdev.remote(mdev["info"], mdev["uuid"])
            return "abandoned"
        log.info("ARQ %s: %s", arq_uuid, state, extra=_fields(plan))
        return state

    @staticmethod
    def _agent(hostname: str):
        return ray.get_actor(host_agent_name(hostname), namespace=NAMESPACE)

    async def _program(self, plan) -> dict[str, Any]:
        try:
            agent = self._agent(plan.hostname)
        except ValueError:
            return {"ok": False, "error": f"host {plan.hostname} has no agent"}
        result = await agent.program.remote(plan.driver_name, plan.deployable_name, plan.bitstream_id)
        if result["ok"]:
            await asyncio.to_thread(self.store.transact, _record_bitstream, plan.deployable_id, plan.bitstream_id)
        return result

    async def _create_mdev(self, plan) -> dict[str, Any]:
        """Create the mdev of the handle the ARQ holds (idempotent on the host): the handle's uuid
        and info, with "error" when it could not be created."""
        handle = await asyncio.to_thread(self.store.query, _handle_of, plan.arq_uuid)
        try:
            result = await self._agent(plan.hostname).create_mdev.remote(handle["info"], handle["uuid"])
        except ValueError:
            result = {"ok": False, "error": f"host {plan.hostname} has no agent"}
        return handle if result["ok"] else {**handle, "error": result["error"]}

    async def _fail(self, arq_uuid: str, reason: str) -> str:
        """BindFailed (releasing a handle already claimed); Nova is told like for a success."""
        from rayborg.store import arq_state

        log.warning("ARQ %s: bind failed: %s", arq_uuid, reason, extra={"arq": arq_uuid})
        try:
            return str(await asyncio.to_thread(self.store.transact, arq_state.fail_bind, arq_uuid, reason))
        except arq_state.StoreError as exc:
            log.info("ARQ %s: could not mark failed: %s", arq_uuid, exc)
            return "abandoned"
        finally:
            self._allocation_wake.set()  # a standalone ARQ's allocation is to be given back

    # -- Placement allocations of standalone binds ---------------------------------------------
    async def _allocate_standalone(self, consumer: str) -> str | None:
        """Push the consumer's allocation now, retrying while Placement is unreachable; None when
        Placement holds it, else why not (the bind then fails cleanly)."""
        from rayborg.actors.placement_client import PlacementUnavailable
        from rayborg.actors.standalone_placement import AllocationRefused

        delay = self.config.retry_interval
        for attempt in range(BIND_PLACEMENT_ATTEMPTS):
            try:
                await self._push_consumer(consumer)
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

    async def _push_consumer(self, consumer: str) -> None:
        """Bring Placement in line with the consumer's standalone ARQs (one at a time per consumer)."""
        from rayborg.actors.standalone_placement import push
        from rayborg.store import standalone_allocations as outbox

        async with self._consumer_locks.setdefault(consumer, asyncio.Lock()):
            pending = await asyncio.to_thread(self.store.query, outbox.pending, consumer)
            pushed = await asyncio.to_thread(push, self.placement, pending)
            clean = await asyncio.to_thread(self.store.transact, outbox.record_pushed, consumer,
                                            pending.version, pushed)
            self.allocations_pushed += 1
        if clean:
            self._consumer_locks.pop(consumer, None)

    async def _allocation_loop(self) -> None:
        """Push the dirty consumers this binder owns: after unbinds, deletes and failed binds (the
        front door wakes it), after a restart, and every ALLOCATION_POLL_S in case a wake was lost."""
        from rayborg.actors.placement_client import PlacementError
        from rayborg.store import standalone_allocations as outbox

        if self.placement is None:
            return
        delay = self.config.retry_interval
        while True:
            try:
                await asyncio.wait_for(self._allocation_wake.wait(), ALLOCATION_POLL_S)
            except TimeoutError:
                pass
            self._allocation_wake.clear()
            failed = False
            for consumer in await asyncio.to_thread(self.store.query, outbox.dirty):
                if binder_index(consumer, self.config.binder_count) != self.index:
                    continue
                try:
                    await self._push_consumer(consumer)
                except PlacementError as exc:
                    log.warning("consumer %s: allocation not pushed (%s): retrying", consumer, exc)
                    failed = True
                except Exception:  # noqa: BLE001 - a store hiccup: next round
                    log.exception("consumer %s: allocation push failed", consumer)
                    failed = True
            if failed:
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
                self._allocation_wake.set()
            else:
                delay = self.config.retry_interval

    def sync_allocations(self) -> None:
        """Wake the allocation push (the front door calls it after unbinds and deletes)."""
        self._allocation_wake.set()

    # -- after a restart -----------------------------------------------------------------------
    async def _resume(self) -> None:
        from rayborg.store import bind_plan

        mine = self._mine(await asyncio.to_thread(self.store.query, bind_plan.in_flight))
        if mine:
            log.info("binder %d: resuming %d binds left in BindStarted", self.index, len(mine))
            await self.bind(mine)
        self._nova_wake.set()

    def _mine(self, arqs: list[tuple[str, str | None]]) -> list[str]:
        """The uuids of these (uuid, instance) pairs whose instance this binder owns."""
        return [u for u, instance in arqs if binder_index(instance, self.config.binder_count) == self.index]

    async def _redrive_loop(self) -> None:
        """Take up again the binds this binder owns that sit in BindStarted with nobody working on
        them (a batch that failed on a store error, a submit lost between front door and binder):
        without this they would wait for the binder's next restart."""
        from rayborg.store import bind_plan

        while True:
            await asyncio.sleep(self.config.redrive_interval)
            try:
                idle = await asyncio.to_thread(self.store.query, bind_plan.in_flight, self.config.redrive_interval)
            except Exception:  # noqa: BLE001 - the store is unreachable: next round
                log.exception("binder %d: could not look for idle binds", self.index)
                continue
            mine = [u for u in self._mine(idle) if u not in self._active]
            if mine:
                log.warning("binder %d: re-driving %d binds idle in BindStarted", self.index, len(mine))
                self.redriven += len(mine)
                task = asyncio.get_running_loop().create_task(self.bind(mine))
                task.add_done_callback(lambda t: t.cancelled() or t.exception())  # outcome is in the store

    # -- Nova ----------------------------------------------------------------------------------
    async def _nova_loop(self) -> None:
        from rayborg.actors.nova_client import BoundEvent, NovaError
        from rayborg.store import bind_plan

        if self.nova is None:  # no Nova to tell (standalone use): the events stay marked, unsent
            return
        delay = self.config.retry_interval
        while True:
            await self._nova_wake.wait()
            self._nova_wake.clear()
            pending = await asyncio.to_thread(self.store.query, bind_plan.pending_events)
            batches: list[list[BoundEvent]] = [[]]
            for instance, arqs in pending.items():
                if binder_index(instance, self.config.binder_count) != self.index:
                    continue
                if len(batches[-1]) >= NOVA_BATCH:
                    batches.append([])
                batches[-1].extend(BoundEvent(instance, u, s) for u, s in arqs)
            failed = False
            for batch in filter(None, batches):
                try:
                    refused = await asyncio.to_thread(self.nova.send_bound_events, batch)
                except NovaError as exc:
                    log.warning("Nova events not delivered (%s): retrying", exc)
                    failed = True
                    continue
                delivered = [e.arq_uuid for e in batch if e.instance_uuid not in refused]
                failed = failed or bool(refused)
                if delivered:
                    await asyncio.to_thread(self.store.transact, bind_plan.clear_events, delivered)
                self.events_sent += len(delivered)
            if failed:
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
                self._nova_wake.set()
            else:
                delay = self.config.retry_interval

    # -- Python API and CLI ---------------------------------------------------------------------
    async def op(self, name: str, **kwargs) -> Any:
        """Store reads, enable/disable and standalone claims for programs anywhere on the cluster
        (`rayborg.python_api.ops`); the binders run where the database is reachable."""
        from rayborg.python_api import ops

        if name == "reap_loop":
            return await ops.reap_loop(self)
        return await ops.run(self, name, **kwargs)

    def status(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        return {"name": binder_name(self.index), "pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id(),
                "hostname": socket.gethostname(), "binds_done": self.binds_done,
                "binds_failed": self.binds_failed, "binds_in_progress": len(self._active),
                "binds_redriven": self.redriven, "nova_events_sent": self.events_sent,
                "allocations_pushed": self.allocations_pushed,
                "nova": self.config.nova_url, "bind_p50_ms": lat[len(lat) // 2] * 1000 if lat else None}


def _fields(plan) -> dict[str, Any]:
    """Structured log fields of a bind (see rayborg/logs.py)."""
    return {"arq": plan.arq_uuid, "host": plan.hostname, "deployable": plan.deployable_name,
            "instance": plan.instance_uuid}


def _plan_and_finish(session, arq_uuids: list[str], placement: bool) -> tuple[dict[str, Any], dict[str, str]]:
    """One transaction per batch: the ARQs' bind plans, and the binds that need nothing but a
    handle claimed finished (uuid -> state); the others (programming first, an mdev to create, a
    standalone allocation to make in Placement, a reason to fail) are left to `_bind_slow`."""
    from rayborg.store import arq_state, bind_plan

    plans = bind_plan.load_many(session, arq_uuids)
    quick = [u for u, plan in plans.items() if plan.state == "BindStarted" and not (
        plan.error or plan.bitstream_id or plan.attach_type == "MDEV" or (plan.standalone and placement))]
    return plans, arq_state.finish_binds(session, quick) if quick else {}


def _record_bitstream(session, deployable_id: int, bitstream_id: str) -> None:
    from rayborg.store.tables import Deployable

    dep = session.get(Deployable, deployable_id)
    if dep is not None:
        dep.bitstream_id = bitstream_id


def _handle_of(session, arq_uuid: str) -> dict[str, Any]:
    import json

    from sqlmodel import select

    from rayborg.store.tables import AttachHandle, ExtARQ

    arq = session.exec(select(ExtARQ).where(ExtARQ.uuid == arq_uuid)).one()
    handle = session.get(AttachHandle, arq.attach_handle_id)
    return {"uuid": handle.uuid, "info": json.loads(handle.attach_info)}

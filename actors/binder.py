"""Binder: k of them (`rayborg:binder:<i>`); all ARQs of one instance go to the same binder.

One bind path, from a Nova PATCH, a standalone PATCH or `rayborg.claim` alike: the front door (or
`claim`) moves the ARQs to BindStarted and hands them to `bind`, which queues them; the batch step
finishes those that need only an attach handle claimed in one transaction, the slow path the others
(Placement allocation of a standalone bind, FPGA programming, the driver's `prepare` of the
handle) before it marks them Bound or BindFailed; the Nova notifier then tells Nova. Releases
(unbind, delete, a claim's release) come back here: the driver's `unprepare` and the push of the
consumer's Placement allocation. Nothing lives only in memory: after a restart the binder finishes
the binds it owned that are still in BindStarted, and the outboxes in the store (Nova events,
standalone allocations) are pushed again.

Every background part is one `step()` driven by `wake_loop.run`: batching, re-driving, Nova
notification, the allocation push and binder 0's claim reaper.
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

from rayborg.actors import metrics, wake_loop
from rayborg.actors.bitstream_check import check_bitstream
from rayborg.actors.claim_reaper import REAP_INTERVAL, ClaimReaper
from rayborg.actors.device_prep import prepares
from rayborg.actors.placement_sync import placement_client
from rayborg.actors.runtime_config import (NAMESPACE, PLACEMENT_SYNC_NAME, RuntimeConfig, binder_name,
                                           host_agent_name)
from rayborg.actors.standalone_placement import DEFAULT_OWNER, AllocationPusher
from rayborg.actors.unified_limits import UnifiedLimits
from rayborg.drivers.base import BoundHandle
from rayborg.store import arq_state, attach_handles, bind_plan, claims, loaded_function, nova_events, quotas
from rayborg.store.attach_handles import HeldHandle
from rayborg.store.bind_plan import BindPlan
from rayborg.store.urls import shown_url
from rayborg.store.engine import Store
from rayborg.store.queries import operator
from rayborg.store.tables import ARQState

log = logging.getLogger("rayborg.binder")
claim_log = logging.getLogger("rayborg.claims")

ALLOCATION_POLL_S = 5.0
BIND_BATCH = 256  # ARQs finished in one transaction at most
CLAIM_ATTEMPTS = 3  # Placement refusing a claim's devices this often fails the claim
PLACEMENT_REFUSED = "Placement refused the allocation: "
ABANDONED = "abandoned"  # a bind whose ARQ was unbound or deleted while the binder worked on it


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


def _slow(plan: BindPlan, placement: bool) -> bool:
    """Whether a bind needs more than a handle claimed (left to `Binder._bind_slow`)."""
    return bool(plan.error or plan.bitstream_id or plan.function or prepares(plan.driver_name)
                or (plan.standalone and placement))


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1, max_concurrency=64)
class Binder:
    async def __init__(self, config: RuntimeConfig, index: int):
        from rayborg.actors.nova_notifier import NovaNotifier

        config.setup_logging()
        self.config = config
        self.index = index
        self.store = Store(config.database_url)
        self.binds_done = 0
        self.binds_failed = 0
        self.latencies: list[float] = []
        self.redriven = 0
        self._bind_queue: list[tuple[str, asyncio.Future]] = []
        self._bind_wake = asyncio.Event()
        self._active: dict[str, asyncio.Future] = {}  # ARQs queued or being bound here -> outcome
        retry = {"retry": config.retry_interval}
        self._tasks = [wake_loop.start(self._batch_step, self._bind_wake, **retry),
                       wake_loop.start(self._redrive_step, poll=config.redrive_interval, **retry)]
        nova = nova_client(config)
        self.notifier = None if nova is None else NovaNotifier(self.store, nova, self._owns)
        self._nova_wake = asyncio.Event()
        if self.notifier is not None:  # else (standalone use) the events stay marked, unsent
            self._tasks.append(wake_loop.start(self.notifier.step, self._nova_wake, **retry))
        placement = placement_client(config)  # None: no Placement, standalone binds allocate nothing
        self.allocations = None if placement is None else AllocationPusher(
            self.store, placement, self._owns, config.retry_interval)
        self._allocation_wake = asyncio.Event()
        if self.allocations is not None:
            self._tasks.append(wake_loop.start(self.allocations.step, self._allocation_wake,
                                               poll=ALLOCATION_POLL_S, **retry))
        self.reaper = ClaimReaper(self.store, self.release) if index == 0 else None
        if self.reaper is not None:  # releases the standalone claims of Ray jobs that ended
            self._tasks.append(wake_loop.start(self.reaper.step, poll=REAP_INTERVAL, **retry))
        self._tasks.append(asyncio.get_running_loop().create_task(self._resume()))

    def _owns(self, instance_uuid: str | None) -> bool:
        return binder_index(instance_uuid, self.config.binder_count) == self.index

    # -- binding -------------------------------------------------------------------------------
    async def bind(self, arq_uuids: list[str]) -> dict[str, str]:
        """Finish the binds of ARQs already in BindStarted; returns uuid -> final state.

        The ARQs join a queue that `_batch_step` drains in batches: ARQs that only need an attach
        handle claimed are finished together in one transaction (with SQLite's single writer, one
        commit per bind was what bounded throughput); the others go on as tasks of their own."""
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

    async def _batch_step(self) -> bool:
        """Drain the queue in batches of BIND_BATCH; a batch that fails on the store fails its
        callers (the ARQs stay BindStarted: re-driven)."""
        while self._bind_queue:
            batch, self._bind_queue = self._bind_queue[:BIND_BATCH], self._bind_queue[BIND_BATCH:]
            try:
                await self._bind_batch(dict(batch))
            except Exception as exc:  # noqa: BLE001 - a store hiccup: the ARQs stay BindStarted
                log.exception("bind batch of %d failed", len(batch))
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
        return True

    async def _bind_batch(self, waiting: dict[str, asyncio.Future]) -> None:
        started = time.perf_counter()
        placement = self.allocations is not None
        plans, states = await asyncio.to_thread(self.store.transact, bind_plan.finish_quick, list(waiting),
                                                lambda plan: _slow(plan, placement))
        for arq_uuid, fut in waiting.items():
            plan = plans.get(arq_uuid)
            if arq_uuid in states:
                self._resolved(fut, states[arq_uuid], started)
            elif plan is None or plan.state != ARQState.BIND_STARTED:
                self._resolved(fut, "missing" if plan is None else plan.state, started)
            else:
                task = asyncio.get_running_loop().create_task(self._bind_slow(plan))
                task.add_done_callback(lambda t, fut=fut: self._resolved(fut, t, started))

    def _resolved(self, fut: asyncio.Future, outcome, started: float) -> None:
        """Settle one bind's future with its state (or a finished task's result) and count it."""
        if isinstance(outcome, asyncio.Task):
            if outcome.cancelled() or outcome.exception() is not None:
                if not fut.done():
                    fut.set_exception(outcome.exception() or asyncio.CancelledError())
                return
            outcome = outcome.result()
        state = str(outcome)
        if state == ARQState.BOUND:
            self.binds_done += 1
        elif state == ARQState.BIND_FAILED:
            self.binds_failed += 1
        elapsed = time.perf_counter() - started
        self.latencies.append(elapsed)
        del self.latencies[:-1000]
        metrics.bind_finished(state, elapsed)
        if not fut.done():
            fut.set_result(state)

    async def _bind_slow(self, plan: BindPlan) -> str:
        """A bind with work before the claim (Placement allocation, programming) or after it (the
        driver's prepare of the handle)."""
        arq_uuid = plan.arq_uuid
        if plan.error:
            return await self._fail(arq_uuid, plan.error)
        if plan.standalone and self.allocations is not None:
            # Allocated in Placement before anything else, so that a Nova scheduling from the same
            # Placement can never book the device rayborg chose.
            refused = await self.allocations.allocate(plan.instance_uuid)
            if refused:
                return await self._fail(arq_uuid, PLACEMENT_REFUSED + refused)
        if plan.bitstream_id:
            result = await self._program(plan)
            if not result["ok"]:
                return await self._fail(arq_uuid, f"programming failed: {result['error']}")
        elif plan.function is not None:
            result = await self._program_function(plan)
            if not result["ok"]:
                return await self._fail(arq_uuid, result["error"])
        prepared = None
        try:
            if prepares(plan.driver_name):
                # The handle is held (the ARQ stays BindStarted) until the driver has prepared it: a
                # binder killed in between resumes with the same handle instead of leaving a Bound
                # ARQ without a usable device, and Nova is told only about a usable one.
                held = await asyncio.to_thread(self.store.transact, arq_state.hold_handle, arq_uuid)
                if held != ARQState.BIND_STARTED:
                    return str(held)
                prepared, error = await self._prepare(arq_uuid)
                if error:
                    return await self._fail(arq_uuid, f"device preparation failed: {error}")
            state = str(await asyncio.to_thread(self.store.transact, arq_state.finish_bind, arq_uuid))
        except arq_state.StoreError as exc:  # unbound or deleted while we worked: nothing to finish
            log.info("ARQ %s: bind abandoned: %s", arq_uuid, exc, extra=_fields(plan))
            if prepared is not None:  # the release may have run before the device was prepared
                await self._unprepare([prepared])
            return ABANDONED
        log.info("ARQ %s: %s", arq_uuid, state, extra=_fields(plan))
        return state

    @staticmethod
    def _agent(hostname: str):
        return ray.get_actor(host_agent_name(hostname), namespace=NAMESPACE)

    async def _program(self, plan: BindPlan) -> dict[str, Any]:
        try:
            agent = self._agent(plan.hostname)
        except ValueError:
            return {"ok": False, "error": f"host {plan.hostname} has no agent"}
        result = await agent.program.remote(plan.driver_name, plan.deployable_name, plan.bitstream_id)
        if result["ok"]:
            await asyncio.to_thread(self.store.transact, bind_plan.record_bitstream, plan.deployable_id,
                                    plan.bitstream_id)
        return result

    async def _program_function(self, plan: BindPlan) -> dict[str, Any]:
        """The host finds the one bitstream with the function the profile names and programs it,
        unless the deployable already runs that function (what the store last heard of it)."""
        try:
            agent = self._agent(plan.hostname)
        except ValueError:
            return {"ok": False, "error": f"host {plan.hostname} has no agent"}
        bitstream_id, reported = await asyncio.to_thread(self.store.query, loaded_function.loaded,
                                                         plan.deployable_id)
        result = await agent.program_function.remote(plan.driver_name, plan.deployable_name, plan.function,
                                                     bitstream_id, reported)
        if result["ok"] and result["programmed"]:
            await asyncio.to_thread(self.store.transact, bind_plan.record_bitstream, plan.deployable_id,
                                    result["bitstream_id"])
        return result

    async def _prepare(self, arq_uuid: str) -> tuple[HeldHandle, str | None]:
        """The driver's prepare of the handle the ARQ holds (idempotent on the host): the handle,
        and why it could not be prepared (None when it was)."""
        (handle,) = await asyncio.to_thread(self.store.query, attach_handles.held, [arq_uuid])
        result = await self._on_host(handle, "prepare")
        return handle, result["error"]

    async def _unprepare(self, handles: list[HeldHandle]) -> None:
        """The drivers' unprepare of released handles, on their hosts at once (failures logged)."""
        results = await asyncio.gather(*(self._on_host(h, "unprepare") for h in handles if prepares(h.driver_name)))
        for result in results:
            if not result["ok"]:
                log.warning("unprepare failed: %s", result["error"])

    async def _on_host(self, handle: HeldHandle, method: str) -> dict[str, Any]:
        try:
            agent = self._agent(handle.hostname)
        except ValueError:
            return {"ok": False, "error": f"host {handle.hostname} has no agent"}
        bound = BoundHandle(handle.uuid, handle.attach_type, handle.attach_info, handle.instance_uuid)
        return await getattr(agent, method).remote(handle.driver_name, bound)

    async def _fail(self, arq_uuid: str, reason: str) -> str:
        """BindFailed (releasing a handle already claimed); Nova is told like for a success."""
        log.warning("ARQ %s: bind failed: %s", arq_uuid, reason, extra={"arq": arq_uuid})
        try:
            return str(await asyncio.to_thread(self.store.transact, arq_state.fail_bind, arq_uuid, reason))
        except arq_state.StoreError as exc:
            log.info("ARQ %s: could not mark failed: %s", arq_uuid, exc)
            return ABANDONED
        finally:
            self._allocation_wake.set()  # a standalone ARQ's allocation is to be given back

    # -- releases ------------------------------------------------------------------------------
    async def released(self, handles: list[HeldHandle], consumers: list[str]) -> None:
        """ARQs let go of these handles (unbind, delete): the drivers unprepare them on their hosts,
        and the consumers' Placement allocations are pushed now (else by the allocation step)."""
        await self._unprepare(handles)
        if self.allocations is None:
            return
        for consumer in consumers:
            try:
                await self.allocations.push(consumer)
            except Exception as exc:  # noqa: BLE001 - the outbox keeps it dirty: pushed later
                log.warning("consumer %s: allocation not pushed yet (%s)", consumer, exc)
                self._allocation_wake.set()

    # -- after a restart, and binds nobody works on ---------------------------------------------
    async def _resume(self) -> None:
        mine = self._mine(await asyncio.to_thread(self.store.query, bind_plan.in_flight))
        if mine:
            log.info("binder %d: resuming %d binds left in BindStarted", self.index, len(mine))
            await self.bind(mine)
        self._nova_wake.set()

    def _mine(self, arqs: list[tuple[str, str | None]]) -> list[str]:
        """The uuids of these (uuid, instance) pairs whose instance this binder owns."""
        return [u for u, instance in arqs if self._owns(instance)]

    async def _redrive_step(self) -> bool:
        """Take up again the binds this binder owns that sit in BindStarted with nobody working on
        them (a batch that failed on a store error, a submit lost between front door and binder):
        without this they would wait for the binder's next restart."""
        idle = await asyncio.to_thread(self.store.query, bind_plan.in_flight, self.config.redrive_interval)
        mine = [u for u in self._mine(idle) if u not in self._active]
        if mine:
            log.warning("binder %d: re-driving %d binds idle in BindStarted", self.index, len(mine))
            self.redriven += len(mine)
            task = asyncio.get_running_loop().create_task(self.bind(mine))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # outcome is in the store
        return True

    # -- standalone claims (rayborg.claim) -------------------------------------------------------
    async def claim(self, profile: str, consumer: str, count: int = 1, host: str | None = None,
                    project_id: str | None = None, user_id: str | None = None) -> dict[str, Any]:
        """Bind `count` x the profile's accelerators to `consumer` (a `claims.consumer_uuid` this
        binder owns) as a standalone bind; all or nothing. Devices Placement refuses (someone
        else's allocation fills them) are given back and others picked, CLAIM_ATTEMPTS times."""
        project_id, user_id = project_id or DEFAULT_OWNER, user_id or DEFAULT_OWNER
        limits = arq_state.AmountLimits(self.config.max_group_amount, self.config.max_profile_amount)
        quota = self._quota_limits()  # as a bind PATCH: over it, nothing is created
        exclude: set[str] = set()
        for _ in range(CLAIM_ATTEMPTS):
            arqs = await asyncio.to_thread(self.store.transact, claims.start, profile, count, host, consumer,
                                           project_id, limits, exclude, quota)
            await self.bind(arqs)
            devices = await asyncio.to_thread(self.store.query, claims.devices, consumer)
            failed = [d for d in devices if d["state"] != ARQState.BOUND]
            if not failed:
                break
            await self.release(consumer, quiet=True)
            why = failed[0]["bind_error"] or f"accelerator request {failed[0]['arq']} is {failed[0]['state']}"
            if not why.startswith(PLACEMENT_REFUSED):
                raise claims.ClaimError(why)
            claim_log.warning("claim: Placement refused %s: %s", sorted({d["rp_uuid"] for d in devices}), why,
                              extra={"instance": consumer})
            exclude |= {d["rp_uuid"] for d in devices}
        else:
            raise claims.ClaimError(f"Placement refused the allocation {CLAIM_ATTEMPTS} times; last: {why}")
        await asyncio.to_thread(self.store.transact, nova_events.clear, arqs)  # no Nova behind a claim
        for device in devices:
            claim_log.info("claimed for profile %s", profile, extra=claims.log_fields(consumer, device))
        return {"consumer": consumer, "profile": profile, "count": count, "project_id": project_id,
                "user_id": user_id, "placement": self.allocations is not None, "devices": devices}

    async def release(self, consumer: str, quiet: bool = False) -> dict[str, Any]:
        """Give a claim back: delete its ARQs (their handles free again), unprepare their devices
        and push the consumer's Placement allocation. Idempotent."""
        held, _ = await asyncio.to_thread(self.store.transact, bind_plan.delete_releasing, None, consumer, None,
                                          True)
        await self.released(held.handles, held.consumers)
        for arq in [] if quiet else held.arq_uuids:
            claim_log.info("claim released", extra={"instance": consumer, "arq": arq})
        return {"consumer": consumer, "released": held.arq_uuids}

    async def claims(self) -> dict[str, list[str]]:
        """consumer -> ARQ uuids of every standalone claim."""
        return await asyncio.to_thread(self.store.query, claims.listing)

    # -- operator reads and actions (Python API, CLI) ---------------------------------------------
    def settings(self) -> dict[str, Any]:
        """What a client needs to know of this deployment (the database URL without password)."""
        c = self.config
        return {"database_url": shown_url(c.database_url),
                "placement_url": c.placement_url, "nova_url": c.nova_url, "binder_count": c.binder_count,
                "namespace": c.namespace}

    async def deployables(self) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.store.query, operator.deployables)

    async def quota_usage(self, project_id: str | None = None) -> list[dict[str, Any]]:
        """Quota usage and the [quota] limits, per project and resource class (`quotas.report`)."""
        return await asyncio.to_thread(self.store.query, quotas.report, self._quota_limits(), project_id)

    def _quota_limits(self) -> quotas.Limits:
        """The [quota] table, or Keystone's unified limits (`RuntimeConfig.unified_limits`; one reader,
        and its cache, per binder)."""
        if self.config.unified_limits is None:
            return quotas.Limits.from_table(self.config.quota)
        if getattr(self, "_unified_limits", None) is None:
            self._unified_limits = UnifiedLimits(self.config.keystone, self.config.unified_limits)
        return quotas.Limits(per_project=self._unified_limits)

    async def arqs(self, state: str | None = None, host: str | None = None) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.store.query, operator.arqs, state, host)

    async def summary(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.store.query, operator.summary)

    async def set_device_status(self, device: str, enabled: bool, reason: str | None = None) -> dict[str, Any]:
        """Enable or disable (with `reason`, kept until enabled) a device (by uuid, or a deployable's
        name/uuid); PlacementSync pushes it."""
        result = await asyncio.to_thread(self.store.transact, operator.set_device_status, device, enabled,
                                         reason)
        try:
            ray.get_actor(PLACEMENT_SYNC_NAME, namespace=NAMESPACE).nudge.remote()
        except ValueError:
            pass
        return result

    async def check_bitstream(self, bitstream: str, hosts: list[str]) -> dict[str, str]:
        return await asyncio.to_thread(check_bitstream, self.config, bitstream, hosts)

    def status(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        return {"name": binder_name(self.index), "pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id(),
                "hostname": socket.gethostname(), "binds_done": self.binds_done,
                "binds_failed": self.binds_failed, "binds_in_progress": len(self._active),
                "binds_redriven": self.redriven,
                "nova_events_sent": self.notifier.sent if self.notifier is not None else 0,
                "allocations_pushed": self.allocations.pushed if self.allocations is not None else 0,
                "claims_reaped": self.reaper.reaped if self.reaper is not None else 0,
                "nova": self.config.nova_url, "bind_p50_ms": lat[len(lat) // 2] * 1000 if lat else None}


def _fields(plan: BindPlan) -> dict[str, Any]:
    """Structured log fields of a bind (see rayborg/logs.py)."""
    return {"arq": plan.arq_uuid, "host": plan.hostname, "deployable": plan.deployable_name,
            "instance": plan.instance_uuid}

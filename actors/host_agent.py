"""HostAgent: one per Ray node, pinned there, restarted forever. Owns the drivers of its host.

It sweeps the host at start, every `report_interval` and on hotplug events, and sends the report
to PlacementSync only when its content hash changed. It also acts on devices when a binder or the
API asks (program an FPGA or load a NIC's DDP package, update a device's firmware, prepare/unprepare
a bound handle through its driver). It never writes the store or Placement.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import time
from typing import Any

import ray

from rayborg.actors import metrics
from rayborg.actors.runtime_config import NAMESPACE, PLACEMENT_SYNC_NAME, RuntimeConfig

log = logging.getLogger("rayborg.host_agent")


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1, max_concurrency=32)
class HostAgent:
    async def __init__(self, hostname: str, config: RuntimeConfig):
        from rayborg.drivers.registry import HostDrivers

        config.setup_logging()
        self.hostname = hostname
        self.config = config
        host = config.for_host(hostname)
        self.sysfs_root = host["sysfs_root"]
        self.drivers = HostDrivers(hostname, sysfs_root=host["sysfs_root"], dev_root=host["dev_root"],
                                   drivers=host["drivers"], options=host["options"])
        self.last_hash: str | None = None   # forgotten on restart: the first sweep always reports
        self.last_sweep: float | None = None
        self.reports_sent = 0
        self.last_stats_hash: str | None = None
        self.stats_reports_sent = 0  # reports sent only because counters moved
        self.hotplug_options = dict(host["options"].get("hotplug") or {})
        self.hotplug_sweeps = 0
        self.hotplug_subsystems: list[str] = []  # what the last hotplug batch was about
        self.programming: dict[str, float] = {}  # deployable name -> start time
        self.programs_run = 0  # driver programmings started (since this agent started)
        self.updating: dict[str, float] = {}  # device -> start time of its firmware update
        self._program_calls: dict[str, tuple[Any, asyncio.Task]] = {}  # deployable -> (bitstream, call)
        self._sweep_lock = asyncio.Lock()
        self._queued_sweep: asyncio.Future | None = None
        self._loop_task = asyncio.get_running_loop().create_task(self._sweep_loop())
        self._hotplug = self._start_hotplug()

    # -- discovery -----------------------------------------------------------------------------
    async def _sweep_loop(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:  # noqa: BLE001 - keep sweeping; the next one may work
                log.exception("host %s: sweep failed", self.hostname)
            await asyncio.sleep(self.config.report_interval)

    async def sweep(self, force: bool = False) -> dict[str, Any]:
        """Discover now; report to PlacementSync if anything changed (or `force`)."""
        async with self._sweep_lock:
            return await self._sweep_locked(force)

    async def _sweep_after_change(self) -> None:
        """A sweep after a device changed (e.g. programmed). Changes that finish while a sweep
        waits for the lock share that one sweep, so a batch of programmings costs a few sweeps,
        not one each; a sweep already discovering does not count (it may have missed the change)."""
        queued = self._queued_sweep
        if queued is not None:
            await asyncio.wait([queued])
            return
        self._queued_sweep = queued = asyncio.get_running_loop().create_future()
        try:
            async with self._sweep_lock:
                self._queued_sweep = None  # from here on, a new change needs a new sweep
                await self._sweep_locked(False)
        finally:
            self._queued_sweep = None if self._queued_sweep is queued else self._queued_sweep
            queued.set_result(None)

    async def _sweep_locked(self, force: bool) -> dict[str, Any]:
        report = await asyncio.to_thread(self.drivers.discover)
        self.last_sweep = time.time()
        changed = force or report.content_hash != self.last_hash
        # Counters that moved are sent too (the store keeps the last ones), but the content hash,
        # which leaves them out, says the tree is unchanged: nothing is marked for Placement.
        stats_hash = report.stats_hash()
        stats_changed = stats_hash != self.last_stats_hash
        if changed or stats_changed:
            sync = ray.get_actor(PLACEMENT_SYNC_NAME, namespace=NAMESPACE)
            await sync.report.remote(report.model_dump(mode="json"))
            self.last_hash, self.last_stats_hash = report.content_hash, stats_hash
            self.reports_sent += int(changed)
            self.stats_reports_sent += int(not changed)
        if changed:
            log.info("host %s: reported %d devices (%d errors), hash %s", self.hostname,
                     len(report.devices), len(report.errors), report.content_hash[:12])
        return {"hostname": self.hostname, "changed": changed, "stats_changed": stats_changed,
                "hash": report.content_hash,
                "devices": len(report.devices), "errors": [e.model_dump() for e in report.errors]}

    def _start_hotplug(self):
        """Follow udev events; a debounced batch of them triggers a sweep at once.

        `driver_options["hotplug"]` (per host through `host_overrides`) picks the event source:
        `source` "netlink" (pyudev; the default when sysfs_root is the real /sys and a real driver
        runs: fixture trees and fake devices get no kernel events), "inject" (events come from `inject_udev_event`, for
        tests and for tools that learn of changes another way) or "off"; and `debounce`,
        `max_delay` (seconds), `subsystems` (udev subsystems to watch) for HotplugMonitor."""
        from rayborg.drivers.hotplug import SUBSYSTEMS, HotplugMonitor

        opts = self.hotplug_options
        real = [name for name in self.drivers.drivers if name != "fake"]
        source = opts.get("source") or ("netlink" if str(self.sysfs_root) == "/sys" and real else "off")
        kw = {k: opts[k] for k in ("debounce", "max_delay") if opts.get(k) is not None}
        kw["subsystems"] = list(opts.get("subsystems") or SUBSYSTEMS)
        loop = asyncio.get_running_loop()

        def changed(subsystems: frozenset[str]) -> None:  # on the monitor's thread
            asyncio.run_coroutine_threadsafe(self._hotplug_sweep(subsystems), loop)

        try:
            if source == "off":
                return None
            if source == "inject":
                monitor = HotplugMonitor(changed, source=_InjectedEvents(), **kw)
            elif source == "netlink":
                monitor = HotplugMonitor.netlink(changed, **kw)
            else:
                raise ValueError(f"unknown hotplug source {source!r} (netlink, inject, off)")
            monitor.start()
            log.info("host %s: hotplug events from %s", self.hostname, source)
            return monitor
        except Exception as exc:  # noqa: BLE001 - no udev (containers): periodic sweeps only
            log.info("host %s: no hotplug events (%s); sweeping every %ss", self.hostname, exc,
                     self.config.report_interval)
            return None

    async def _hotplug_sweep(self, subsystems: frozenset[str]) -> None:
        """A udev batch: discover now (the sweep itself reports only if something changed)."""
        self.hotplug_sweeps += 1
        self.hotplug_subsystems = sorted(subsystems)
        log.info("host %s: hotplug (%s): sweeping", self.hostname, ", ".join(self.hotplug_subsystems))
        try:
            await self._sweep_after_change()
        except Exception:  # noqa: BLE001 - the next event or periodic sweep tries again
            log.exception("host %s: hotplug sweep failed", self.hostname)

    def inject_udev_event(self, subsystem: str, action: str = "change", sys_path: str = "") -> bool:
        """Feed one udev-like event to an "inject" hotplug source; False when there is none."""
        from rayborg.drivers.hotplug import UdevEvent

        source = getattr(self._hotplug, "source", None)
        if not isinstance(source, _InjectedEvents):
            return False
        source.put(UdevEvent(subsystem=subsystem, action=action, sys_path=sys_path))
        return True

    # -- device actions ------------------------------------------------------------------------
    async def program(self, driver_name: str, deployable_name: str, bitstream: Any,
                      timeout: float | None = None) -> dict[str, Any]:
        """Program a deployable; then sweep so the loaded function reaches the store.

        One programming per deployable at a time: a call for a deployable already being programmed
        with the same bitstream joins that one (a binder restarted mid-bind asks again), with another
        bitstream it waits its turn. A cancelled caller does not stop the vendor tool, so the
        deployable stays listed in `programming` until the tool has really finished."""
        while (running := self._program_calls.get(deployable_name)) is not None:
            if running[0] == bitstream:
                return await asyncio.shield(running[1])
            await asyncio.wait([running[1]])
        call = asyncio.get_running_loop().create_task(
            self._program_now(driver_name, deployable_name, bitstream, timeout))
        self._program_calls[deployable_name] = (bitstream, call)
        call.add_done_callback(lambda _: self._program_calls.pop(deployable_name, None))
        return await asyncio.shield(call)

    async def _program_now(self, driver_name: str, deployable_name: str, bitstream: Any,
                           timeout: float | None) -> dict[str, Any]:
        fields = {"host": self.hostname, "deployable": deployable_name}
        self.programming[deployable_name] = time.time()
        self.programs_run += 1
        started = time.perf_counter()
        try:
            await asyncio.to_thread(self._program_sync, driver_name, deployable_name, bitstream, timeout)
        except Exception as exc:  # noqa: BLE001 - the caller gets a result, not a traceback
            log.warning("host %s: programming %s failed: %s", self.hostname, deployable_name, exc, extra=fields)
            metrics.programmed("failed", time.perf_counter() - started)
            return {"ok": False, "error": str(exc), "duration": time.perf_counter() - started}
        finally:
            self.programming.pop(deployable_name, None)
        metrics.programmed("ok", time.perf_counter() - started)
        log.info("host %s: programmed %s in %.2f s", self.hostname, deployable_name,
                 time.perf_counter() - started, extra=fields)
        await self._sweep_after_change()
        return {"ok": True, "error": None, "duration": time.perf_counter() - started}

    def _program_sync(self, driver_name: str, deployable_name: str, bitstream: Any,
                      timeout: float | None) -> None:
        """The driver's programming; a bitstream found by function (`program_function`) is fetched
        here first, inside the one-programming-per-deployable turn, and its download deleted after."""
        from rayborg.drivers.bitstreams import Bitstream

        if not isinstance(bitstream, Bitstream):
            self.drivers.program(driver_name, deployable_name, bitstream, timeout=timeout)
            return
        local = self.drivers.bitstreams.local_copy(bitstream)
        try:
            self.drivers.program(driver_name, deployable_name, local, timeout=timeout)
        finally:
            local.discard()

    async def program_function(self, driver_name: str, deployable_name: str, query: Any,
                               bitstream_id: str | None, reported: list[str]) -> dict[str, Any]:
        """Run the function `query` (drivers.bitstreams.BitstreamQuery) asks for on a deployable: find
        the one bitstream of this host's source that matches and program it, unless the deployable
        already runs it (`bitstream_id` and `reported`: what the store knows the deployable runs).
        The result says which bitstream and whether it was programmed."""
        from rayborg.drivers.bitstreams import already_runs

        source = self.drivers.bitstreams
        if source is None:
            return {"ok": False, "error": f"host {self.hostname} has no bitstream source to find {query} in",
                    "bitstream_id": None, "programmed": False}
        try:
            found = await asyncio.to_thread(source.find, query)
        except Exception as exc:  # noqa: BLE001 - no match, several, Glance down: the caller's reason
            return {"ok": False, "error": str(exc), "bitstream_id": None, "programmed": False}
        if already_runs(found, bitstream_id, reported):
            log.info("host %s: %s already runs %s (%s)", self.hostname, deployable_name, query, found.image_id,
                     extra={"host": self.hostname, "deployable": deployable_name})
            return {"ok": True, "error": None, "bitstream_id": found.image_id, "programmed": False}
        result = await self.program(driver_name, deployable_name, found)
        error = result["error"] and (f"programming bitstream {found.image_id} for {query} failed: "
                                     f"{result['error']}")
        return result | {"error": error, "bitstream_id": found.image_id, "programmed": result["ok"]}

    async def update_firmware(self, driver_name: str, device: str, image_path: str,
                              timeout: float | None = None) -> dict[str, Any]:
        """Flash a device's firmware with its driver's vendor tool (`Driver.update`); `device` is
        its key, PCI address or a deployable's name, `image_path` a file on this host. One update
        per device at a time; a second is refused, not queued (a flash is not to be repeated)."""
        if device in self.updating:
            return {"ok": False, "error": f"a firmware update of {device} is already running", "output": "",
                    "duration": 0.0}
        self.updating[device] = time.time()
        started = time.perf_counter()
        fields = {"host": self.hostname, "device": device}
        try:
            output = await asyncio.to_thread(self.drivers.update, driver_name, device, image_path,
                                             timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - the caller gets a result, not a traceback
            log.warning("host %s: firmware update of %s failed: %s", self.hostname, device, exc, extra=fields)
            return {"ok": False, "error": str(exc), "output": "", "duration": time.perf_counter() - started}
        finally:
            self.updating.pop(device, None)
        log.info("host %s: firmware of %s updated from %s", self.hostname, device, image_path, extra=fields)
        await self._sweep_after_change()
        return {"ok": True, "error": None, "output": output, "duration": time.perf_counter() - started}

    async def prepare(self, driver_name: str, handle: Any) -> dict[str, Any]:
        """The driver's `prepare` of a handle claimed for an ARQ (drivers.base.BoundHandle)."""
        return await self._handle_call(driver_name, "prepare", handle)

    async def unprepare(self, driver_name: str, handle: Any) -> dict[str, Any]:
        """The driver's `unprepare` of a handle an ARQ let go of."""
        return await self._handle_call(driver_name, "unprepare", handle)

    async def _handle_call(self, driver_name: str, method: str, handle: Any) -> dict[str, Any]:
        try:
            await asyncio.to_thread(getattr(self.drivers.driver(driver_name), method), handle)
        except Exception as exc:  # noqa: BLE001 - the caller gets a result, not a traceback
            log.warning("host %s: %s %s of handle %s failed: %s", self.hostname, driver_name, method, handle.uuid,
                        exc, extra={"host": self.hostname})
            return {"ok": False, "error": str(exc)}
        return {"ok": True, "error": None}

    # -- operators -----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        ctx = ray.get_runtime_context()
        return {"name": f"rayborg:host:{self.hostname}", "hostname": self.hostname, "pid": os.getpid(),
                "node_id": ctx.get_node_id(), "drivers": sorted(self.drivers.drivers),
                "sysfs_root": self.sysfs_root, "last_hash": self.last_hash, "last_sweep": self.last_sweep,
                "reports_sent": self.reports_sent, "stats_reports_sent": self.stats_reports_sent,
                "programming": sorted(self.programming),
                "programs_run": self.programs_run, "updating": sorted(self.updating),
                "hotplug": self._hotplug is not None, "hotplug_sweeps": self.hotplug_sweeps,
                "hotplug_subsystems": self.hotplug_subsystems}


class _InjectedEvents:
    """A HotplugMonitor event source fed by `HostAgent.inject_udev_event` instead of netlink."""

    def __init__(self):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()

    def put(self, event: Any) -> None:
        self._queue.put(event)

    def poll(self, timeout: float | None = None) -> Any:
        try:
            return self._queue.get(timeout=timeout) if timeout else self._queue.get_nowait()
        except queue.Empty:
            return None

"""Hotplug: turn udev events into debounced "these subsystems changed, re-discover" calls.

A burst of events (enabling 64 VFs, creating mdevs) becomes one callback once the host has been quiet
for `debounce` seconds, and at most `max_delay` seconds after the first event of the burst.

    monitor = HotplugMonitor.netlink(callback)      # pyudev netlink on a real host
    monitor.start()                                 # background thread; monitor.stop()
    await monitor.run(queue)                        # or: asyncio, puts frozensets on the queue

The event source is injectable (anything with `poll(timeout)` returning a device-like object with
`subsystem`/`action`/`sys_path`, or None; `fileno()` for asyncio), and so is the clock: tests call
`feed(event)` and `flush()` with a fake clock instead of sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("rayborg.drivers.hotplug")

# udev subsystem -> what the drivers call it ("nd" and "dax" are both PMEM, fpga ones both FPGA)
SUBSYSTEMS: dict[str, str] = {"pci": "pci", "mdev": "mdev", "nd": "nd", "dax": "nd", "fpga": "fpga",
                              "fpga_region": "fpga", "nvme": "nvme", "net": "net", "vfio": "pci"}


@dataclass(frozen=True)
class UdevEvent:
    """A stand-in for pyudev.Device in tests and for non-udev sources."""

    subsystem: str
    action: str = "change"
    sys_path: str = ""


class HotplugMonitor:
    def __init__(self, callback: Callable[[frozenset[str]], Any], *, source: Any = None, debounce: float = 1.0,
                 max_delay: float = 5.0, clock: Callable[[], float] = time.monotonic,
                 subsystems: Iterable[str] = SUBSYSTEMS):
        self.callback = callback
        self.source = source
        self.debounce, self.max_delay, self.clock = debounce, max_delay, clock
        self.subsystems = {s: SUBSYSTEMS.get(s, s) for s in subsystems}
        self.pending: set[str] = set()
        self.first_at: float | None = None
        self.last_at: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def netlink(cls, callback: Callable[[frozenset[str]], Any], **kw) -> HotplugMonitor:
        """A monitor on the kernel's udev netlink socket (needs udev: raises where there is none)."""
        import pyudev

        monitor = pyudev.Monitor.from_netlink(pyudev.Context())
        for subsystem in kw.get("subsystems", SUBSYSTEMS):
            monitor.filter_by(subsystem)
        monitor.start()
        return cls(callback, source=monitor, **kw)

    # ---- the pure part: events in, debounced batches out -----------------------------------

    def feed(self, device: Any) -> bool:
        """Record one event; True if it is about a subsystem we watch."""
        name = self.subsystems.get(getattr(device, "subsystem", None) or "")
        if name is None:
            return False
        now = self.clock()
        if not self.pending:
            self.first_at = now
        self.pending.add(name)
        self.last_at = now
        log.debug("udev %s %s", getattr(device, "action", "?"), getattr(device, "sys_path", "?"))
        return True

    def deadline(self) -> float | None:
        """When the pending batch is due (quiet for `debounce`, or `max_delay` after its first event)."""
        if not self.pending:
            return None
        return min(self.last_at + self.debounce, self.first_at + self.max_delay)

    def take(self, force: bool = False) -> frozenset[str] | None:
        """The pending batch if it is due (or `force`), clearing it; else None."""
        due = self.deadline()
        if due is None or (not force and self.clock() < due):
            return None
        batch = frozenset(self.pending)
        self.pending.clear()
        self.first_at = self.last_at = None
        return batch

    def flush(self, force: bool = False) -> frozenset[str] | None:
        """Call the callback with the batch if it is due; returns the batch."""
        batch = self.take(force)
        if batch:
            self.callback(batch)
        return batch

    # ---- thread mode -------------------------------------------------------------------------

    def poll_once(self, timeout: float = 0.0) -> frozenset[str] | None:
        device = self.source.poll(timeout=timeout)
        if device is not None:
            self.feed(device)
        return self.flush()

    def _loop(self) -> None:
        while not self._stop.is_set():
            due = self.deadline()
            timeout = 0.5 if due is None else max(0.0, due - self.clock())
            try:
                self.poll_once(min(timeout, 0.5))
            except Exception:  # noqa: BLE001 - a bad event or callback must not end hotplug
                log.exception("hotplug: event handling failed")

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="rayborg-hotplug", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    # ---- asyncio mode ------------------------------------------------------------------------

    async def run(self, queue: asyncio.Queue) -> None:
        """Put each due batch on `queue` until cancelled; reads the source when its fd is readable."""
        loop = asyncio.get_running_loop()
        timer: list[asyncio.TimerHandle] = []

        def emit() -> None:
            timer.clear()
            batch = self.take()
            if batch:
                queue.put_nowait(batch)
            elif self.pending:
                arm()

        def arm() -> None:
            for t in timer:
                t.cancel()
            timer.clear()
            due = self.deadline()
            if due is not None:
                timer.append(loop.call_later(max(0.0, due - self.clock()), emit))

        def readable() -> None:
            while (device := self.source.poll(timeout=0)) is not None:
                self.feed(device)
            arm()

        fd = self.source.fileno()
        loop.add_reader(fd, readable)
        try:
            await asyncio.Event().wait()
        finally:
            loop.remove_reader(fd)
            for t in timer:
                t.cancel()

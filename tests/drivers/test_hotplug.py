"""Hotplug: udev events become debounced subsystem batches; no sleeping, an injected clock."""

from __future__ import annotations

import asyncio
import errno
import os
from collections import deque

import pytest

from rayborg.drivers.hotplug import SUBSYSTEMS, HotplugMonitor, UdevEvent


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class QueueSource:
    """Stands in for pyudev.Monitor: poll() pops an event; fileno() is readable while events wait."""

    def __init__(self):
        self.events: deque = deque()
        self.r, self.w = os.pipe()

    def push(self, event):
        self.events.append(event)
        os.write(self.w, b"x")

    def poll(self, timeout=None):
        if not self.events:
            return None
        os.read(self.r, 1)
        return self.events.popleft()

    def fileno(self):
        return self.r


def test_burst_is_debounced_into_one_batch():
    clock, calls = Clock(), []
    mon = HotplugMonitor(calls.append, debounce=1.0, max_delay=5.0, clock=clock)
    for i in range(64):  # enabling 64 VFs
        assert mon.feed(UdevEvent("pci", "add", f"/sys/devices/pci0000:3b/0000:3b:02.{i}"))
    mon.feed(UdevEvent("mdev", "add"))
    assert mon.flush() is None and calls == []
    clock.now += 0.9
    mon.feed(UdevEvent("dax", "add"))
    clock.now += 0.9
    assert mon.flush() is None  # quiet for only 0.9 s
    clock.now += 0.1
    assert mon.flush() == frozenset({"pci", "mdev", "nd"})
    assert calls == [frozenset({"pci", "mdev", "nd"})]
    assert mon.flush(force=True) is None  # nothing pending any more


def test_storm_still_fires_after_max_delay():
    clock, calls = Clock(), []
    mon = HotplugMonitor(calls.append, debounce=1.0, max_delay=3.0, clock=clock)
    for _ in range(14):  # an event every 0.5 s for 7 s
        mon.feed(UdevEvent("pci"))
        clock.now += 0.5
        mon.flush()
    assert len(calls) == 2  # at 3.0 s and 6.0 s of a storm that never goes quiet


def test_uninteresting_subsystems_are_ignored():
    mon = HotplugMonitor(lambda b: None, clock=Clock())
    assert not mon.feed(UdevEvent("usb", "add"))
    assert mon.deadline() is None


def test_pyudev_device_objects_are_accepted():
    pyudev = pytest.importorskip("pyudev")
    calls = []
    mon = HotplugMonitor(calls.append, debounce=0, clock=Clock())
    # a real pyudev Device built from this machine's sysfs (every Linux has PCI or at least 'mem')
    ctx = pyudev.Context()
    dev = next(iter(ctx.list_devices(subsystem="pci")), None) or pyudev.Devices.from_path(ctx, "/devices/virtual/mem/null")
    mon.subsystems[dev.subsystem] = dev.subsystem
    assert mon.feed(dev)
    assert mon.flush() == frozenset({"pci" if dev.subsystem == "pci" else dev.subsystem})


def test_poll_once_reads_the_injected_source():
    clock, calls, src = Clock(), [], QueueSource()
    mon = HotplugMonitor(calls.append, source=src, debounce=0.5, clock=clock)
    src.push(UdevEvent("nd", "add"))
    assert mon.poll_once() is None
    clock.now += 0.5
    assert mon.poll_once() == frozenset({"nd"}) and calls == [frozenset({"nd"})]


async def test_asyncio_mode_puts_batches_on_a_queue():
    src, queue = QueueSource(), asyncio.Queue()
    loop = asyncio.get_running_loop()
    mon = HotplugMonitor(lambda b: None, source=src, debounce=0.0, clock=loop.time)
    task = asyncio.create_task(mon.run(queue))
    src.push(UdevEvent("pci", "add"))
    src.push(UdevEvent("mdev", "add"))
    batch = await asyncio.wait_for(queue.get(), timeout=5)
    assert batch <= {"pci", "mdev"} and batch
    if batch != {"pci", "mdev"}:
        batch |= await asyncio.wait_for(queue.get(), timeout=5)
    assert batch == {"pci", "mdev"}
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


class FakeNetlink:
    """Stands in for pyudev.Monitor.from_netlink's monitor: records filters and start."""

    def __init__(self):
        self.filters: list[str] = []
        self.started = False

    def filter_by(self, subsystem):
        self.filters.append(subsystem)

    def start(self):
        self.started = True


def test_netlink_watches_the_asked_subsystems(monkeypatch):
    import pyudev

    made = []
    monkeypatch.setattr(pyudev.Monitor, "from_netlink",
                        staticmethod(lambda context, source="udev": made.append(FakeNetlink()) or made[-1]))
    mon = HotplugMonitor.netlink(lambda b: None, subsystems=["pci", "dax"], debounce=0.2, max_delay=3.0)
    (netlink,) = made
    assert mon.source is netlink and netlink.filters == ["pci", "dax"] and netlink.started
    assert (mon.debounce, mon.max_delay, mon.subsystems) == (0.2, 3.0, {"pci": "pci", "dax": "nd"})
    made.clear()
    HotplugMonitor.netlink(lambda b: None)
    assert made[0].filters == list(SUBSYSTEMS)  # every subsystem a driver cares about by default


def test_netlink_without_udev_raises_for_the_agent_to_fall_back(monkeypatch):
    # containers often have no udev netlink; the HostAgent catches this and sweeps periodically
    import pyudev

    def no_netlink(context, source="udev"):
        raise OSError(errno.EPROTONOSUPPORT, "Protocol not supported")

    monkeypatch.setattr(pyudev.Monitor, "from_netlink", staticmethod(no_netlink))
    with pytest.raises(OSError, match="Protocol not supported"):
        HotplugMonitor.netlink(lambda b: None)

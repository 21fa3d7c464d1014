"""One HostAgent on a fixture sysfs tree: it reports only when its report changed (last_hash,
reports_sent, PlacementSync's count agree), and a udev event fed to its hotplug monitor leads to a
sweep and a report within seconds, long before the next periodic sweep."""

import time

import pytest
import ray
from sqlmodel import select

from rayborg.actors.runtime_config import NAMESPACE, PLACEMENT_SYNC_NAME, RuntimeConfig, host_agent_name
from rayborg.drivers.sysfs_tree import fixture_tree
from rayborg.store.tables import Device
from runtime_helpers import fresh_store, kill_runtime, start_runtime, wait_for

pytestmark = [pytest.mark.xdist_group("ray"), pytest.mark.slow]


@pytest.fixture(scope="module")
def agent_runtime(ray_cluster, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("host-agent")
    store = fresh_store(tmp)
    root = fixture_tree("nvidia_gpu", tmp / "host-a")  # two GPUs: each test unplugs its own
    config = RuntimeConfig(
        database_url=store.url, report_interval=3600,  # no periodic sweep during the tests
        host_overrides={
            "host-a": {"sysfs_root": str(root), "driver_options": {
                "hotplug": {"source": "inject", "debounce": 0.2, "max_delay": 1.0}}},
            "host-b": {"drivers": []}, "host-c": {"drivers": []}})
    start_runtime(config)
    agent = ray.get_actor(host_agent_name("host-a"), namespace=NAMESPACE)
    sync = ray.get_actor(PLACEMENT_SYNC_NAME, namespace=NAMESPACE)
    wait_for(lambda: _gpus(store), what="host-a's first report")
    # Every agent's first sweep reports; the tests count reports, so let host-b's and host-c's land first.
    wait_for(lambda: _status(sync)["reports_applied"] >= 3, what="the first report of all three hosts")
    yield {"store": store, "root": root, "agent": agent, "sync": sync}
    kill_runtime()
    store.dispose()


def _gpus(store) -> list[str]:
    return store.query(lambda s: sorted(d.std_board_info_key for d in s.exec(select(Device))
                                        if d.hostname == "host-a"))


def _status(handle) -> dict:
    return ray.get(handle.status.remote(), timeout=30)


def _unplug(root, address: str) -> None:
    (root / "bus/pci/devices" / address).unlink()


def test_sweeps_report_only_what_changed(agent_runtime):
    store, root, agent, sync = (agent_runtime[k] for k in ("store", "root", "agent", "sync"))
    before, applied = _status(agent), _status(sync)["reports_applied"]
    assert before["reports_sent"] >= 1 and before["last_hash"]
    for _ in range(3):  # nothing changed: no report
        result = ray.get(agent.sweep.remote(), timeout=30)
        assert result["changed"] is False and result["hash"] == before["last_hash"]
    after = _status(agent)
    assert after["reports_sent"] == before["reports_sent"] and after["last_sweep"] > before["last_sweep"]
    assert _status(sync)["reports_applied"] == applied

    gpus = _gpus(store)
    _unplug(root, "0000:af:00.0")
    result = ray.get(agent.sweep.remote(), timeout=30)  # changed: exactly one report
    assert result["changed"] is True and result["hash"] != before["last_hash"]
    assert _status(agent)["reports_sent"] == before["reports_sent"] + 1
    assert _status(sync)["reports_applied"] == applied + 1
    assert _gpus(store) == [g for g in gpus if g != "nvidia_gpu:0000:af:00.0"]
    assert ray.get(agent.sweep.remote(), timeout=30)["changed"] is False  # and then quiet again
    assert _status(agent)["reports_sent"] == before["reports_sent"] + 1
    assert _status(sync)["reports_applied"] == applied + 1


def test_an_injected_udev_event_sweeps_and_reports_within_seconds(agent_runtime):
    store, root, agent, sync = (agent_runtime[k] for k in ("store", "root", "agent", "sync"))
    other = ray.get_actor(host_agent_name("host-b"), namespace=NAMESPACE)
    assert _status(agent)["hotplug"] is True and _status(other)["hotplug"] is False  # source "off"
    assert ray.get(other.inject_udev_event.remote("pci"), timeout=30) is False
    before = _status(agent)

    # An event of a subsystem nobody watches starts nothing.
    assert ray.get(agent.inject_udev_event.remote("usb", "add", "/devices/usb1"), timeout=30) is True
    time.sleep(0.6)  # > debounce
    assert _status(agent)["hotplug_sweeps"] == before["hotplug_sweeps"]

    # The kernel removes a GPU: a burst of events, one debounced sweep, one report.
    gpu = "nvidia_gpu:0000:3b:00.0"
    assert gpu in _gpus(store)
    _unplug(root, "0000:3b:00.0")
    started = time.monotonic()
    for action in ("unbind", "remove", "remove"):
        ray.get(agent.inject_udev_event.remote("pci", action, "/devices/pci0000:3b/0000:3b:00.0"), timeout=30)
    wait_for(lambda: gpu not in _gpus(store), timeout=15, interval=0.1, what="the hotplug report in the store")
    assert time.monotonic() - started < 10  # not the 3600 s report interval
    after = _status(agent)
    assert after["hotplug_sweeps"] == before["hotplug_sweeps"] + 1 and after["hotplug_subsystems"] == ["pci"]
    assert after["reports_sent"] == before["reports_sent"] + 1

    # An event after which nothing changed: a sweep, but no report.
    applied = _status(sync)["reports_applied"]
    ray.get(agent.inject_udev_event.remote("mdev"), timeout=30)
    wait_for(lambda: _status(agent)["hotplug_sweeps"] == after["hotplug_sweeps"] + 1, timeout=15, interval=0.1,
             what="the second hotplug sweep")
    assert _status(agent)["hotplug_subsystems"] == ["mdev"]
    assert _status(agent)["reports_sent"] == after["reports_sent"]
    assert _status(sync)["reports_applied"] == applied

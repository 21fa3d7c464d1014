"""Driver counters through the REST API: a host report's stats are shown by GET /v2/devices/{uuid}
(microversion 2.3, the show only) and exported at GET /metrics; counters that move change neither the
tree's Placement marks nor cost a Placement call."""

from __future__ import annotations

import uuid as uuidlib

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import select

from rayborg.actors.placement_client import PlacementClient
from rayborg.actors.placement_push import push
from rayborg.drivers.registry import discover_host
from rayborg.drivers.sysfs_tree import fixture_tree
from rayborg.store.host_reports import apply_report
from rayborg.store.placement_state import provider_uuid
from rayborg.store.tables import Deployable, Device

V = "OpenStack-API-Version"
PF = "0000:3b:00.0"
RX = f"bus/pci/devices/{PF}/net/eth2/statistics/rx_packets"


@pytest.fixture
def root(tmp_path):
    return fixture_tree("intel_x710", tmp_path / "sys")


def sweep(root, host="node1"):
    return discover_host(host, root, drivers=["intel_x710"])


def device_uuid(store, key=f"intel_x710:{PF}"):
    return store.query(lambda s: s.exec(select(Device.uuid).where(Device.std_board_info_key == key)).one())


async def show(client, uuid, version="2.3"):
    resp = await client.get(f"/v2/devices/{uuid}", headers={V: f"accelerator {version}"})
    assert resp.status == 200
    return await resp.json()


async def test_stats_shown_at_2_3_only_and_not_in_the_list(client, store, root):
    store.transact(apply_report, sweep(root))
    uuid = device_uuid(store)
    body = await show(client, uuid)
    assert body["stats"]["rx_packets"] == 81234 and body["stats"]["rx_dropped"] == 3
    assert len(body["stats"]) == 10
    assert "stats" not in await show(client, uuid, "2.2")
    listed = (await (await client.get("/v2/devices", headers={V: "accelerator 2.3"})).json())["devices"]
    assert listed and all("stats" not in d for d in listed)


async def test_device_without_counters_shows_empty_stats(client, store, tmp_path):
    store.transact(apply_report, discover_host("node2", fixture_tree("intel_fpga", tmp_path / "fpga"),
                                               drivers=["intel_fpga"]))
    uuid = store.query(lambda s: s.exec(select(Device.uuid).where(Device.hostname == "node2")).first())
    assert (await show(client, uuid))["stats"] == {}


async def test_counter_churn_updates_stats_but_marks_nothing(client, store, root):
    store.transact(apply_report, sweep(root))
    store.transact(lambda s: [setattr(d, "placement_dirty", False) for d in s.exec(select(Deployable))])
    uuid = device_uuid(store)
    before = await show(client, uuid)
    (root / RX).write_text("99999999\n")
    again = sweep(root)
    diff = store.transact(apply_report, again)
    assert diff.empty
    assert store.query(lambda s: {d.placement_dirty for d in s.exec(select(Deployable))}) == {False}
    after = await show(client, uuid)
    assert after["stats"]["rx_packets"] == 99999999
    assert after["updated_at"] == before["updated_at"]  # counters are not an update of the device


async def test_metrics_export_device_counters(client, store, root):
    store.transact(apply_report, sweep(root))
    uuid = device_uuid(store)
    resp = await client.get("/metrics")
    assert resp.status == 200
    families = {f.name: f for f in text_string_to_metric_families(await resp.text())}
    samples = {(s.labels["hostname"], s.labels["device"], s.labels["counter"]): s.value
               for s in families["rayborg_device_stat"].samples}
    assert samples[("node1", uuid, "rx_packets")] == 81234
    assert samples[("node1", uuid, "tx_bytes")] == 81234 * 1200
    assert len(samples) == 20  # 2 PFs x 10 interface counters, nothing else
    assert families["rayborg_device_stats_truncated"].samples[0].value == 0


async def test_metrics_device_cap(client, store, root, monkeypatch):
    from rayborg.api.handlers import metrics as handler

    store.transact(apply_report, sweep(root))
    monkeypatch.setattr(handler, "MAX_STAT_DEVICES", 1)
    families = {f.name: f for f in text_string_to_metric_families(await (await client.get("/metrics")).text())}
    assert len({s.labels["device"] for s in families["rayborg_device_stat"].samples}) == 1
    assert families["rayborg_device_stats_truncated"].samples[0].value == 1


def test_counter_churn_costs_zero_placement_calls(store, placement_server, root):
    host = f"compute-{uuidlib.uuid4().hex[:8]}"
    placement = PlacementClient(placement_server.url)
    assert placement._request("POST", "/resource_providers",
                              {"name": host, "uuid": provider_uuid(host)}).status_code == 200
    first = sweep(root, host)
    store.transact(apply_report, first)
    assert push(store, placement, host).pushed == 3  # 2 VFs of eth2, eth3 itself
    placement.calls.clear()
    for value in (1, 2, 3):
        (root / RX).write_text(f"{value}\n")
        report = sweep(root, host)
        assert report.content_hash == first.content_hash and report.stats_hash() != first.stats_hash()
        assert store.transact(apply_report, report).empty
        result = push(store, placement, host)
        assert result.pushed == 0 and result.deleted == 0
    assert sum(placement.calls.values()) == 0
    stored = store.query(lambda s: s.exec(select(Device.stats).where(Device.std_board_info_key == f"intel_x710:{PF}")).one())
    assert stored["rx_packets"] == 3

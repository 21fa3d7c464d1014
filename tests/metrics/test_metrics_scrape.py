"""The actors' metrics reach Ray's Prometheus endpoint (every node's metrics agent, `MetricsExportPort`
in ray.nodes()) and, relayed, the front door's GET /metrics: bind a claim, program, push to
Placement, then scrape both. The front door's own requests are on its /metrics, not Ray's."""

import asyncio
import random
import urllib.request
import uuid

import pytest
import ray
from factories import add_profile
from runtime_helpers import (
    fresh_store,
    kill_runtime,
    make_compute_nodes,
    new_instance,
    start_runtime,
    wait_for,
)
from aiohttp.test_utils import TestClient, TestServer
from sqlmodel import select

from rayborg.actors.binder import binder_index
from rayborg.actors.runtime_config import NAMESPACE, RuntimeConfig, binder_name
from rayborg.api.app import create_app
from rayborg.settings import Settings
from rayborg.store import arq_state
from rayborg.store.tables import Deployable

pytestmark = [pytest.mark.xdist_group("ray"), pytest.mark.slow]
EXPECTED = [
    "ray_rayborg_binds_total",
    "ray_rayborg_bind_seconds_bucket",
    "ray_rayborg_placement_calls_total",
    "ray_rayborg_report_devices_bucket",
    "ray_rayborg_report_apply_seconds_bucket",
    "ray_rayborg_programming_seconds_bucket",
    "ray_rayborg_programmings_total",
]


def scrape() -> str:
    text = []
    for node in ray.nodes():
        if node["Alive"] and node.get("MetricsExportPort"):
            url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
            try:
                text.append(urllib.request.urlopen(url, timeout=5).read().decode())
            except OSError:
                pass
    return "\n".join(text)


async def _front_door_scrape(store) -> str:
    """A found list, a missing device and a path no route matches through a real front door in
    this (Ray-connected) process, then its GET /metrics."""
    app = create_app(Settings(database_url=store.url, _env_file=None), store)
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/v2/devices")).status == 200
        assert (await client.get(f"/v2/devices/{uuid.uuid4()}")).status == 404
        assert (await client.get(f"/no/such/{uuid.uuid4()}")).status == 404
        resp = await client.get("/metrics")
        assert resp.status == 200
        return await resp.text()


def _front_door_series(text: str) -> bool:
    """The actors' series relayed without Ray's prefix, next to the front door's own requests."""
    lines = text.splitlines()

    def has(prefix: str, *labels: str) -> bool:
        return any(x.startswith(prefix) and all(label in x for label in labels) for x in lines)

    api = "rayborg_api_requests_total"
    return (has("rayborg_binds_total", 'outcome="Bound"') and has("rayborg_bind_seconds_bucket")
            and has("rayborg_programmings_total", 'outcome="ok"') and has("rayborg_placement_calls_total")
            and has("rayborg_report_apply_seconds_bucket") and has("rayborg_nova_events_pending")
            and has(api, 'route="/v2/devices"', 'status="200"', 'method="GET"')
            and has(api, 'route="/v2/devices/{uuid}"', 'status="404"')
            and has(api, 'route="unmatched"', 'status="404"')
            and not has("ray_"))


def _all_series(text: str) -> bool:
    lines = text.splitlines()

    def has(prefix: str, *labels: str) -> bool:
        return any(x.startswith(prefix) and all(label in x for label in labels) for x in lines)

    return (all(m in text for m in EXPECTED)
            and has("ray_rayborg_binds_total", 'outcome="Bound"')
            and has("ray_rayborg_programmings_total", 'outcome="ok"'))


def test_metrics_are_scraped_from_rays_prometheus_endpoint(ray_cluster, placement_server, tmp_path):
    store = fresh_store(tmp_path)
    make_compute_nodes(placement_server.url, ["host-a"])
    config = RuntimeConfig(
        database_url=store.url,
        placement_url=placement_server.url,
        report_interval=30,
        retry_interval=0.2,
        host_overrides={
            "host-a": {
                "fake_devices": "fpga:2",
                "driver_options": {"fake": {"seed": random.randrange(1, 3000)}},
            },
            "host-b": {"drivers": []},
            "host-c": {"drivers": []},
        },
    )
    start_runtime(config)
    try:
        wait_for(lambda: store.query(lambda s: len(list(s.exec(select(Deployable))))) == 2, what="devices")
        dep = store.query(lambda s: s.exec(select(Deployable)).first())
        add_profile(store, "m-fpga", [{"resources:FPGA": "1", "accel:bitstream_id": "bits-1"}])
        arq = store.transact(arq_state.create_arqs, "m-fpga", "p")[0].uuid
        instance = new_instance()
        store.transact(
            arq_state.start_bind, {arq: arq_state.BindTarget("host-a", dep.rp_uuid, instance, "p")}
        )
        binder = ray.get_actor(binder_name(binder_index(instance, config.binder_count)), namespace=NAMESPACE)
        assert ray.get(binder.bind.remote([arq]), timeout=60) == {arq: "Bound"}  # programs first
        # Series reach the agent in separate reports: wait for every line the test looks for.
        found = wait_for(lambda: (lambda text: text if _all_series(text) else None)(scrape()),
                         timeout=60, interval=1, what="every rayborg metric and series in the scrape")
        assert all(m in found for m in EXPECTED)
        relayed = asyncio.run(_front_door_scrape(store))
        assert _front_door_series(relayed), relayed
    finally:
        kill_runtime()
        store.dispose()

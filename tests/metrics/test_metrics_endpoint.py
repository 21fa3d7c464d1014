"""GET /metrics on the API port (issue 14 item 15), without Ray: the front door's requests and the
in-process binder's binds, by label, and the Nova event outbox as a gauge read at scrape time."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).parents[1] / "api"))
from cyborg_errors import cyborg_fault  # noqa: E402
from factories import add_device, add_profile  # noqa: E402
from rayborg.api.app import create_app  # noqa: E402
from rayborg.api.app_keys import BINDER
from rayborg.settings import Settings  # noqa: E402

NOVA = {"X-Project-Id": "p1", "X-User-Id": "u1", "X-Roles": "member", "X-Service-Roles": "service"}
MEMBER = {"X-Project-Id": "p1", "X-User-Id": "u1", "X-Roles": "member"}


async def scrape(client, headers=None) -> dict[tuple[str, frozenset], float]:
    """(sample name, labels) -> value of one scrape."""
    resp = await client.get("/metrics", headers=headers)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(await resp.text()) for s in family.samples}


def value(samples, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_requests_and_binds_are_counted_by_label(aiohttp_client, settings, store):
    """Counters are per process: the test compares two scrapes."""
    add_profile(store, "dp", [{"resources:FPGA": "1"}])
    tree = add_device(store)
    client = await aiohttp_client(create_app(settings, store))
    before = await scrape(client)
    assert (await client.get("/v2/devices")).status == 200
    assert (await client.get("/accelerator/v2/devices")).status == 200  # the same route label
    assert (await client.get(f"/v2/devices/{uuid.uuid4()}")).status == 404
    assert (await client.get(f"/no/such/{uuid.uuid4()}")).status == 404
    assert (await client.request("PURGE", "/v2/devices")).status == 405  # methods do not grow labels
    resp = await client.post("/v2/accelerator_requests", json={"device_profile_name": "dp"}, headers=MEMBER)
    arq = (await resp.json())["arqs"][0]["uuid"]
    ops = [{"op": "add", "path": "/hostname", "value": "host1"},
           {"op": "add", "path": "/device_rp_uuid", "value": tree.rp_uuids[0]},
           {"op": "add", "path": "/instance_uuid", "value": str(uuid.uuid4())}]
    assert (await client.patch("/v2/accelerator_requests", json={arq: ops}, headers=NOVA)).status == 202
    await client.app[BINDER].drain()
    after = await scrape(client)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    requests = "rayborg_api_requests_total"
    assert delta(requests, route="/v2/devices", method="GET", status="200") == 2
    assert delta(requests, route="/v2/devices/{uuid}", method="GET", status="404") == 1
    assert delta(requests, route="unmatched", method="GET", status="404") == 1
    assert delta(requests, route="unmatched", method="other", status="405") == 1
    assert delta(requests, route="/v2/accelerator_requests", method="PATCH", status="202") == 1
    assert delta(requests, route="/metrics", method="GET", status="200") == 1  # the first scrape
    assert delta("rayborg_api_request_seconds_count", route="/v2/devices", method="GET") == 2
    assert delta("rayborg_api_request_seconds_bucket", route="/v2/devices", method="GET", le="+Inf") == 2
    assert delta("rayborg_binds_total", outcome="Bound") == 1
    assert delta("rayborg_bind_seconds_count", outcome="Bound") == 1
    # no Nova configured: the bound ARQ's event stays in the outbox, read at scrape time
    assert value(before, "rayborg_nova_events_pending") == 0
    assert value(after, "rayborg_nova_events_pending") == 1


async def test_metrics_can_be_restricted_to_admins(aiohttp_client, database_url, store):
    app = create_app(Settings(database_url=database_url, metrics_public=False, _env_file=None), store)
    client = await aiohttp_client(app)
    assert "admin_api" in await cyborg_fault(await client.get("/metrics", headers=MEMBER), 403)
    samples = await scrape(client, headers={"X-Project-Id": "p0", "X-Roles": "admin"})
    assert ("rayborg_nova_events_pending", frozenset()) in samples


async def test_metrics_is_public_by_default(aiohttp_client, settings, store):
    client = await aiohttp_client(create_app(settings, store))
    assert (await scrape(client, headers=MEMBER))[("rayborg_nova_events_pending", frozenset())] == 0


FRONT_DOOR = r"""
import sys
from rayborg.actors import metrics
metrics.use_multiprocess(sys.argv[1])
for _ in range(int(sys.argv[2])):
    metrics.api_request("/v2/devices", "GET", 200, 0.002)
if sys.argv[3] == "scrape":
    from prometheus_client import generate_latest
    class All:
        def collect(self):
            return metrics.collect()
    sys.stdout.write(generate_latest(All()).decode())
"""


def test_front_doors_sharing_the_port_are_counted_together(tmp_path):
    """--workers N: each front door records into prometheus_client's files in one directory, and
    whichever answers the scrape reports the sum (the directory is what api/server.run sets up)."""
    import subprocess

    def front_door(requests: int, then: str) -> str:
        return subprocess.run([sys.executable, "-c", FRONT_DOOR, str(tmp_path), str(requests), then],
                              cwd=tmp_path, capture_output=True, text=True, check=True, timeout=60).stdout

    front_door(3, "exit")
    text = front_door(4, "scrape")
    samples = {(s.name, frozenset(s.labels.items())): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    labels = frozenset({"route": "/v2/devices", "method": "GET", "status": "200"}.items())
    assert samples[("rayborg_api_requests_total", labels)] == 7

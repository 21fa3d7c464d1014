"""`GET /metrics`: Prometheus text for the whole daemon, at the API port (one stable scrape target).

A scrape gathers, merged family by family:
- the front doors' own series (requests, in-process binds): `rayborg.actors.metrics.collect()`;
- with the actors, their `ray_rayborg_*` series, relayed from every alive Ray node's metrics agent
  (`MetricsExportPort` in `ray.nodes()`, a port that changes at every start) under their names
  without Ray's prefix. Relaying at scrape time costs nothing between scrapes, keeps the actors'
  counters in Ray (they survive a front door's restart) and works from any front door;
- `rayborg_nova_events_pending`, read from the store's Nova event outbox now;
- `rayborg_device_stat{hostname, device, counter}`: the drivers' counters of each device (temperature,
  packets, firmware requests...) as its host last reported them, read from the store now. Bounded:
  a driver reports at most `MAX_STATS` counters a device (drivers/base.py), and a scrape shows at
  most MAX_STAT_DEVICES devices (`rayborg_device_stats_truncated` says 1 when some were left out).

Public by default, as Prometheus targets usually are; `metrics_public = false` asks the caller to
pass the `admin_api` policy rule (so a token in keystone mode).
"""

from __future__ import annotations

import asyncio
import logging
import sys

import aiohttp
from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from rayborg.actors import metrics
from rayborg.api.app_keys import AUTH, POLICY, RUNTIME, SETTINGS, STORE
from rayborg.api.openapi_meta import operation
from rayborg.store import nova_events
from rayborg.store.queries import devices as device_queries

log = logging.getLogger(__name__)

RELAY_TIMEOUT_S = 3.0   # per node: a node that does not answer in time is left out of this scrape
RELAY_PARALLEL = 32     # nodes fetched at once
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # what every Prometheus version reads
RAY_PREFIX = "ray_"
RELAYED = "rayborg_"
MAX_STAT_DEVICES = 2000  # x at most 32 counters each: the series one scrape may carry


@operation(summary="Prometheus metrics of the front doors and the actors", responses={200: None},
           tags=["operations"])
async def get_metrics(request: web.Request) -> web.Response:
    """Prometheus text format (version 0.0.4)."""
    app = request.app
    if not app[SETTINGS].metrics_public:
        app[POLICY].authorize("admin_api", await app[AUTH].identify(request))
    families: dict[str, Metric] = {}
    for family in [*metrics.collect(), *await _relayed(), await _nova_pending(app[STORE]),
                   *await _device_stats(app[STORE]), *_actors_up(app)]:
        known = families.setdefault(family.name, family)
        if known is not family:
            known.samples.extend(family.samples)
    return web.Response(body=generate_latest(_Families(families.values())),
                        headers={"Content-Type": CONTENT_TYPE})


class _Families:
    """What `generate_latest` wants: something with `collect()`."""

    def __init__(self, families) -> None:
        self._families = list(families)

    def collect(self):
        return self._families


def _actors_up(app: web.Application) -> list[Metric]:
    """1 once this daemon's Ray actors are up, 0 while they start (serve answers before); none without."""
    runtime = app.get(RUNTIME)
    if runtime is None:
        return []
    gauge = GaugeMetricFamily("rayborg_actors_up", "1 once the Ray actors are up, 0 while they start")
    gauge.add_metric([], 1 if getattr(runtime, "state", "up") == "up" else 0)
    return [gauge]


async def _nova_pending(store) -> Metric:
    gauge = GaugeMetricFamily("rayborg_nova_events_pending",
                              "bound or failed ARQs whose Nova event is not delivered yet")
    gauge.add_metric([], await store.aquery(nova_events.pending_count))
    return gauge


async def _device_stats(store) -> list[Metric]:
    rows = await store.aquery(device_queries.stats, MAX_STAT_DEVICES + 1)
    gauge = GaugeMetricFamily("rayborg_device_stat", "a driver counter of a device, as its host last reported it",
                              labels=["hostname", "device", "counter"])
    for hostname, uuid, counters in rows[:MAX_STAT_DEVICES]:
        for name, value in counters.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                gauge.add_metric([hostname, uuid, name], value)
    truncated = GaugeMetricFamily("rayborg_device_stats_truncated",
                                  f"1 when more than {MAX_STAT_DEVICES} devices have stats and the rest were left out")
    truncated.add_metric([], int(len(rows) > MAX_STAT_DEVICES))
    return [gauge, truncated]


async def _relayed() -> list[Metric]:
    """The actors' series from every alive Ray node's metrics agent (none without Ray)."""
    if "ray" not in sys.modules:
        return []
    import ray

    if not ray.is_initialized():
        return []
    nodes = await asyncio.to_thread(ray.nodes)
    urls = [f"http://{n['NodeManagerAddress']}:{n['MetricsExportPort']}/metrics"
            for n in nodes if n.get("Alive") and n.get("MetricsExportPort")]
    limit = asyncio.Semaphore(RELAY_PARALLEL)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=RELAY_TIMEOUT_S)) as session:
        texts = await asyncio.gather(*(_fetch(session, url, limit) for url in urls))
    return [family for text in texts for family in text_string_to_metric_families(_ours(text))]


async def _fetch(session: aiohttp.ClientSession, url: str, limit: asyncio.Semaphore) -> str:
    async with limit:
        try:
            async with session.get(url) as resp:
                return await resp.text() if resp.status == 200 else ""
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("metrics of %s not relayed: %s", url, exc or type(exc).__name__)
            return ""


def _ours(text: str) -> str:
    """rayborg's lines of a Ray node's export, without Ray's prefix (Ray's own series, most of the
    text, are dropped before parsing)."""
    ours = RAY_PREFIX + RELAYED
    out = []
    for line in text.splitlines():
        if line.startswith(ours):
            out.append(line[len(RAY_PREFIX):])
        elif line.startswith(("# HELP " + ours, "# TYPE " + ours)):
            out.append(line[:7] + line[7 + len(RAY_PREFIX):])
    return "\n".join(out) + "\n"

"""rayborg's Prometheus metrics, all scraped at one stable target: `GET /metrics` on the API port.

Where a process records depends on what it is:

- the actors (Ray worker processes) record through `ray.util.metrics`; every Ray node's metrics
  agent exports them as `ray_rayborg_*` at a port that changes at each start, and the front door's
  /metrics relays them under their own names (`api/handlers/metrics.py`);
- every other process (the front doors, `--no-actors`, tests) records with `prometheus_client`, into
  this module's registry, or into prometheus_client's per-process files when several front doors
  share the port (`use_multiprocess`), so that whichever answers a scrape reports them all.

Each helper never raises, and costs a dict lookup and a counter increment or histogram observation.

    api_request(route, method, status, seconds)   for the front door (route = the route's pattern)
    bind_finished(outcome, seconds)               Binder and LocalBinder, one per ARQ
    placement_call(method, status)                PlacementClient, one per HTTP call
    report_applied(hostname, devices, seconds)    PlacementSync, one per host report
    programmed(outcome, seconds)                  HostAgent, one per programming
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

log = logging.getLogger(__name__)

LATENCY_BOUNDARIES = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]
PROGRAM_BOUNDARIES = [0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600]
SIZE_BOUNDARIES = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]
# Any other method is "other": a client inventing methods must not grow the label set.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# name -> (kind, description, tag keys, boundaries)
METRICS: dict[str, tuple[str, str, tuple[str, ...], list[float] | None]] = {
    "rayborg_api_requests_total": (
        "counter",
        "API requests by route, method and status",
        ("route", "method", "status"),
        None,
    ),
    "rayborg_api_request_seconds": (
        "histogram",
        "API request latency",
        ("route", "method"),
        LATENCY_BOUNDARIES,
    ),
    "rayborg_binds_total": ("counter", "ARQ binds finished, by outcome", ("outcome",), None),
    "rayborg_bind_seconds": ("histogram", "ARQ bind latency (binder side)", ("outcome",), LATENCY_BOUNDARIES),
    "rayborg_placement_calls_total": ("counter", "Placement HTTP calls by method", ("method",), None),
    "rayborg_placement_failures_total": (
        "counter",
        "Placement calls that failed (unreachable or 5xx)",
        ("method",),
        None,
    ),
    "rayborg_report_devices": ("histogram", "devices in an applied host report", ("host",), SIZE_BOUNDARIES),
    "rayborg_report_apply_seconds": (
        "histogram",
        "time to apply a host report to the store",
        ("host",),
        LATENCY_BOUNDARIES,
    ),
    "rayborg_programming_seconds": (
        "histogram",
        "FPGA programming duration by outcome",
        ("outcome",),
        PROGRAM_BOUNDARIES,
    ),
    "rayborg_programmings_total": ("counter", "FPGA programmings by outcome", ("outcome",), None),
}


class _Recorder:
    """This process's metric objects, made on first use; one bound `inc`/`observe` per label set."""

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        # prometheus_client is imported at the first record outside Ray: the actors never need it.
        self._registry: CollectorRegistry | None = None
        self.to_ray: bool | None = None  # decided at the first record: a process never changes kind
        self._metrics: dict[str, Any] = {}
        self._record: dict[tuple[str, tuple[str, ...]], Callable[[float], None]] = {}

    def record(self, name: str, value: float, labels: tuple[str, ...]) -> None:
        try:
            fn = self._record.get((name, labels))
            if fn is None:
                fn = self._record[(name, labels)] = self._bind(name, labels)
            fn(value)
        except Exception as exc:  # noqa: BLE001 - metrics never break the work they measure
            log.debug("metric %s not recorded: %s", name, exc)

    def _bind(self, name: str, labels: tuple[str, ...]) -> Callable[[float], None]:
        if self.to_ray is None:
            self.to_ray = _in_ray_worker()
        kind, description, tags, boundaries = METRICS[name]
        if self.to_ray:
            return _ray_recorder(name, dict(zip(tags, labels)))
        metric = self._metrics.get(name)
        if metric is None:
            from prometheus_client import Counter, Histogram

            registry = None if self.multiprocess_dir else self.registry  # files are collected instead
            if kind == "counter":
                metric = Counter(name, description, tags, registry=registry)
            else:
                metric = Histogram(name, description, tags, buckets=boundaries, registry=registry)
            self._metrics[name] = metric
        child = metric.labels(*labels)
        return child.inc if kind == "counter" else child.observe

    @property
    def registry(self) -> CollectorRegistry:
        if self._registry is None:
            from prometheus_client import CollectorRegistry

            self._registry = CollectorRegistry(auto_describe=False)
        return self._registry

    def collect(self) -> Iterable[Metric]:
        """The front doors' own families: this process's, or every front door's files."""
        if self.multiprocess_dir is None:
            return self.registry.collect()
        from prometheus_client import CollectorRegistry, multiprocess

        registry = CollectorRegistry(auto_describe=False)
        multiprocess.MultiProcessCollector(registry, self.multiprocess_dir)
        return registry.collect()


def _in_ray_worker() -> bool:
    if "ray" not in sys.modules:  # not a Ray process: do not pay for importing Ray
        return False
    import ray
    from ray._private import worker

    return ray.is_initialized() and worker.global_worker.mode == ray.WORKER_MODE


def _ray_recorder(name: str, tags: dict[str, str]) -> Callable[[float], None]:
    from ray.util import metrics as ray_metrics

    kind, description, tag_keys, boundaries = METRICS[name]
    metric = _ray_made.get(name)
    if metric is None:
        if kind == "counter":
            metric = ray_metrics.Counter(name, description=description, tag_keys=tag_keys)
        else:
            metric = ray_metrics.Histogram(name, description=description, boundaries=boundaries, tag_keys=tag_keys)
        _ray_made[name] = metric
    if kind == "counter":
        return lambda value: metric.inc(value, tags=tags)
    return lambda value: metric.observe(value, tags=tags)


_ray_made: dict[str, Any] = {}
_recorder = _Recorder()


def use_multiprocess(directory: str) -> None:
    """Record into prometheus_client's per-process files under `directory` from now on (the front
    doors of one serve share it). Call it before this process records anything."""
    from prometheus_client import values

    global _recorder
    os.makedirs(directory, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    values.ValueClass = values.MultiProcessValue()
    _recorder = _Recorder(directory)


def collect() -> Iterable[Metric]:
    return _recorder.collect()


def api_request(route: str, method: str, status: int, seconds: float) -> None:
    method = method if method in METHODS else "other"
    _recorder.record("rayborg_api_requests_total", 1, (route, method, str(status)))
    _recorder.record("rayborg_api_request_seconds", seconds, (route, method))


def bind_finished(outcome: str, seconds: float) -> None:
    _recorder.record("rayborg_binds_total", 1, (outcome,))
    _recorder.record("rayborg_bind_seconds", seconds, (outcome,))


def placement_call(method: str, failed: bool) -> None:
    _recorder.record("rayborg_placement_calls_total", 1, (method,))
    if failed:
        _recorder.record("rayborg_placement_failures_total", 1, (method,))


def report_applied(hostname: str, devices: int, seconds: float) -> None:
    _recorder.record("rayborg_report_devices", devices, (hostname,))
    _recorder.record("rayborg_report_apply_seconds", seconds, (hostname,))


def programmed(outcome: str, seconds: float) -> None:
    _recorder.record("rayborg_programmings_total", 1, (outcome,))
    _recorder.record("rayborg_programming_seconds", seconds, (outcome,))

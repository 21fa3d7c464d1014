"""rayborg's Prometheus metrics, through `ray.util.metrics`.

Every Ray node's metrics agent exports them at `http://<node>:<MetricsExportPort>/metrics` (see
`ray.nodes()`), with Ray's `ray_` prefix: `ray_rayborg_binds_total`, ... Each helper is a no-op
outside a Ray worker or driver and never raises, so instrumented code also runs without Ray (tests,
`rayborg discover`). The metric objects are made on first use in each process.

    api_request(route, method, status, seconds)   for the front door (route = the route's pattern)
    bind_finished(outcome, seconds)               Binder, one per ARQ
    placement_call(method, status)                PlacementClient, one per HTTP call
    report_applied(hostname, devices, seconds)    PlacementSync, one per host report
    programmed(outcome, seconds)                  HostAgent, one per programming
"""

from __future__ import annotations

import logging
import sys
from typing import Any

log = logging.getLogger(__name__)

LATENCY_BOUNDARIES = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]
PROGRAM_BOUNDARIES = [0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600]
SIZE_BOUNDARIES = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]

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

_made: dict[str, Any] = {}


def _metric(name: str):
    m = _made.get(name)
    if m is None:
        if "ray" not in sys.modules:  # not a Ray process: do not pay for importing Ray
            return None
        import ray
        from ray.util import metrics

        if not ray.is_initialized():
            return None
        kind, description, tags, boundaries = METRICS[name]
        if kind == "counter":
            m = metrics.Counter(name, description=description, tag_keys=tags)
        else:
            m = metrics.Histogram(name, description=description, boundaries=boundaries, tag_keys=tags)
        _made[name] = m
    return m


def _record(name: str, value: float, tags: dict[str, str]) -> None:
    try:
        m = _metric(name)
        if m is None:
            return
        tags = {k: str(v) for k, v in tags.items()}
        if METRICS[name][0] == "counter":
            m.inc(value, tags=tags)
        else:
            m.observe(value, tags=tags)
    except Exception as exc:  # noqa: BLE001 - metrics never break the work they measure
        log.debug("metric %s not recorded: %s", name, exc)


def api_request(route: str, method: str, status: int, seconds: float) -> None:
    _record("rayborg_api_requests_total", 1, {"route": route, "method": method, "status": status})
    _record("rayborg_api_request_seconds", seconds, {"route": route, "method": method})


def bind_finished(outcome: str, seconds: float) -> None:
    _record("rayborg_binds_total", 1, {"outcome": outcome})
    _record("rayborg_bind_seconds", seconds, {"outcome": outcome})


def placement_call(method: str, failed: bool) -> None:
    _record("rayborg_placement_calls_total", 1, {"method": method})
    if failed:
        _record("rayborg_placement_failures_total", 1, {"method": method})


def report_applied(hostname: str, devices: int, seconds: float) -> None:
    _record("rayborg_report_devices", devices, {"host": hostname})
    _record("rayborg_report_apply_seconds", seconds, {"host": hostname})


def programmed(outcome: str, seconds: float) -> None:
    _record("rayborg_programmings_total", 1, {"outcome": outcome})
    _record("rayborg_programming_seconds", seconds, {"outcome": outcome})

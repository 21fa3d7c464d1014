"""What `rayborg status` shows, gathered from a connection: every host (store and Ray nodes, with
its agent's status), devices per family, ARQs per state, the actors' own status, the sync lag."""

from __future__ import annotations

import time
from typing import Any


def hosts(conn) -> list[dict[str, Any]]:
    """Every host the store knows and every Ray node: state, devices, agent status."""
    import ray

    from rayborg.actors.runtime_config import host_agent_name
    from rayborg.python_api.batch import alive_hosts

    summary = conn._call("summary")
    rows = {h["hostname"]: dict(h, devices=0, in_cluster=False, agent=None) for h in summary["hosts"]}
    for dep in conn._call("deployables"):
        if dep["host"] in rows:
            rows[dep["host"]]["devices"] += 1
    for host in alive_hosts():
        rows.setdefault(host, {"hostname": host, "state": "up", "devices": 0, "agent": None})[
            "in_cluster"
        ] = True
    refs = {}
    for host in rows:
        try:
            refs[host] = ray.get_actor(host_agent_name(host), namespace=conn.namespace).status.remote()
        except ValueError:
            pass
    for host, ref in refs.items():
        try:
            rows[host]["agent"] = ray.get(ref, timeout=5)
        except Exception as exc:  # noqa: BLE001 - its node may be gone
            rows[host]["agent"] = {"error": f"{type(exc).__name__}"}
    return [rows[h] for h in sorted(rows)]


def sync_lag(summary: dict[str, Any], sync: dict[str, Any], now: float) -> dict[str, Any]:
    """PlacementSync's part of the status: dirty deployables, age of the last push, and the lag (0
    when nothing is dirty; else how long since the last push)."""
    last = (sync.get("last_push") or {}).get("at")
    return {
        "dirty_deployables": summary["placement_dirty"],
        "last_push_age_s": None if last is None else round(now - last, 3),
        "lag_s": 0.0 if not summary["placement_dirty"] or last is None else round(now - last, 3),
        "placement_down_since": sync.get("placement_down_since"),
        "reports_applied": sync.get("reports_applied"),
        "errors": [h["hostname"] + ": " + h["sync_error"] for h in summary["hosts"] if h.get("sync_error")],
    }


def status(conn) -> dict[str, Any]:
    """Cluster, hosts, devices per family, ARQs per state, sync lag, and each actor's status."""
    import ray

    from rayborg.actors.runtime_config import PLACEMENT_SYNC_NAME, binder_name

    summary = conn._call("summary")
    actors = {}
    names = [PLACEMENT_SYNC_NAME] + [binder_name(i) for i in range(conn.config["binder_count"])]
    for name in names:
        try:
            actors[name] = ray.get(ray.get_actor(name, namespace=conn.namespace).status.remote(), timeout=10)
        except Exception as exc:  # noqa: BLE001
            actors[name] = {"error": f"{type(exc).__name__}: {exc}"}
    lag = sync_lag(summary, actors.get(PLACEMENT_SYNC_NAME, {}), time.time())
    nodes = [n for n in ray.nodes() if n["Alive"]]
    config = conn.config
    return {
        "cluster": {
            "address": ray.get_runtime_context().gcs_address,
            "nodes": len(nodes),
            "cpus": sum(n["Resources"].get("CPU", 0) for n in nodes),
            "namespace": conn.namespace,
            "database": config["database_url"],
            "placement": config["placement_url"],
        },
        "daemon": conn.daemon,
        "hosts": conn.hosts(),
        "devices": summary["devices"],
        "arqs": summary["arqs"],
        "placement_sync": lag,
        "actors": actors,
    }

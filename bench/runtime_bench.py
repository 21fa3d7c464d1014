"""Runtime benchmark: Placement sync cost and bind throughput/latency through the binder actors.

    python bench/runtime_bench.py [--hosts 100] [--devices 8] [--arqs 1000]

Starts its own real Placement (tests/service_starters.py) and a local Ray, prints a table and
writes bench/results/runtime.json. Figures, not assertions: compare runs on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from placement_server import PlacementServer  # noqa: E402


def placement_sync_cost(placement_url: str, hosts: int, devices: int, db_url: str) -> dict:
    from rayborg.actors.placement_client import PlacementClient
    from rayborg.actors.placement_push import push
    from rayborg.drivers.registry import HostDrivers
    from rayborg.store.engine import Store
    from rayborg.store.host_reports import apply_report
    from rayborg.store.migrate import upgrade
    from rayborg.store.placement_state import provider_uuid

    store = Store(db_url)
    upgrade(store.engine)
    client = PlacementClient(placement_url)
    names = [f"bench-host-{i:03d}" for i in range(hosts)]
    for name in names:
        client._request("POST", "/resource_providers", {"name": name, "uuid": provider_uuid(name)})
    agents = {n: HostDrivers(n, drivers=["fake"], options={"fake": {"spec": f"fpga:{devices}x2", "seed": i}})
              for i, n in enumerate(names)}

    def round_(reports) -> tuple[float, int, int]:
        client.calls.clear()
        started = time.perf_counter()
        for report in reports:
            store.transact(apply_report, report)
            push(store, client, report.hostname)
        return time.perf_counter() - started, sum(client.calls.values()), client.writes

    first = round_([a.discover() for a in agents.values()])
    unchanged = round_([a.discover() for a in agents.values()])
    # One device changes: a card is plugged into one host.
    grown = HostDrivers(names[0], drivers=["fake"], options={"fake": {"spec": f"fpga:{devices + 1}x2", "seed": 0}})
    one = round_([grown.discover()])
    store.dispose()
    return {"hosts": hosts, "devices_per_host": devices,
            "first_sync": {"seconds": round(first[0], 2), "calls": first[1], "writes": first[2]},
            "unchanged_rereport": {"seconds": round(unchanged[0], 2), "calls": unchanged[1], "writes": unchanged[2]},
            "one_device_changed": {"seconds": round(one[0], 3), "calls": one[1], "writes": one[2]}}


def bind_throughput(arqs: int, db_url: str, concurrency: int = 50) -> dict:
    import uuid as uuidlib

    import ray
    from sqlmodel import select

    from rayborg.actors.runtime_config import NAMESPACE, RuntimeConfig
    from rayborg.actors.supervisor import Supervisor
    from rayborg.store import arq_state
    from rayborg.store.engine import Store
    from rayborg.store.migrate import upgrade
    from rayborg.store.tables import Deployable, DeviceProfile

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    store = Store(db_url)
    upgrade(store.engine)
    ray.init(address="local", include_dashboard=False, log_to_driver=False, num_cpus=2)
    config = RuntimeConfig(database_url=db_url, fake_devices=f"fpga:{max(arqs // 40, 1) + 2}x50", report_interval=3600)
    sup = Supervisor(config)
    sup.start_singletons()
    sup.reconcile()
    deadline = time.time() + 60
    while time.time() < deadline and not store.query(lambda s: s.exec(select(Deployable)).first()):
        time.sleep(0.1)
    host, deps = store.query(lambda s: (s.exec(select(Deployable)).first().name.split("_")[0],
                                        [d.rp_uuid for d in s.exec(select(Deployable))]))
    store.transact(lambda s: s.add(DeviceProfile(name="bench", groups=[{"resources:FPGA": "1"}])))
    from rayborg.api.ray_binder import RayBinder

    binder = RayBinder(store, config.binder_count)  # what the front door hands binds to

    async def bind_one(arq: str, i: int) -> tuple[str, float]:
        """What Nova's bind PATCH does for one instance: BindStarted in the store, then the binder
        (the front door's part without HTTP); the seconds until Bound."""
        t0 = time.perf_counter()
        instance = str(uuidlib.uuid4())
        target = arq_state.BindTarget(host, deps[i % len(deps)], instance, "p")
        await store.agroup_transact(arq_state.start_bind, {arq: target})
        state = (await binder.bind([arq], {arq: instance}))[arq]
        return state, time.perf_counter() - t0

    async def sequential(n: int) -> list[float]:
        """One client: create one ARQ, bind it, wait until Bound; n times."""
        out = []
        for i in range(n):
            t0 = time.perf_counter()
            arq = (await store.atransact(arq_state.create_arqs, "bench", "p"))[0].uuid
            state, _ = await bind_one(arq, i)
            assert state == "Bound", state
            out.append(time.perf_counter() - t0)
        return out

    async def concurrent(arq_uuids: list[str]) -> tuple[float, list[tuple[str, float]]]:
        sem = asyncio.Semaphore(concurrency)

        async def limited(i: int, arq: str):
            async with sem:
                return await bind_one(arq, i)

        t0 = time.perf_counter()
        results = await asyncio.gather(*(limited(i, a) for i, a in enumerate(arq_uuids)))
        return time.perf_counter() - t0, results

    one = asyncio.run(sequential(100))
    # Nova creates the ARQs before it schedules; the binds are what is timed.
    created = [store.transact(arq_state.create_arqs, "bench", "p")[0].uuid for _ in range(arqs)]
    wall, results = asyncio.run(concurrent(created))
    states = [s for s, _ in results]
    latencies = [t for _, t in results]
    for a in ray.util.list_named_actors(all_namespaces=True):
        if a["namespace"] == NAMESPACE:
            ray.kill(ray.get_actor(a["name"], namespace=NAMESPACE), no_restart=True)
    ray.shutdown()
    store.dispose()
    lat, seq = sorted(latencies), sorted(one)
    return {"arqs": arqs, "concurrency": concurrency, "bound": states.count("Bound"),
            "wall_seconds": round(wall, 2), "binds_per_second": round(arqs / wall, 1),
            "bind_to_bound_p50_ms": round(lat[len(lat) // 2] * 1000, 1),
            "bind_to_bound_p99_ms": round(lat[int(len(lat) * 0.99) - 1] * 1000, 1),
            "create_to_bound_one_client_p50_ms": round(seq[len(seq) // 2] * 1000, 2),
            "create_to_bound_one_client_p99_ms": round(seq[int(len(seq) * 0.99) - 1] * 1000, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--arqs", type=int, default=1000)
    parser.add_argument("--only", choices=("sync", "binds"), help="one half only (results are not written)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="rayborg-bench-"))
    results = {}
    if args.only != "binds":
        placement = PlacementServer().start()
        try:
            results["placement_sync"] = placement_sync_cost(placement.url, args.hosts, args.devices,
                                                            f"sqlite:///{tmp / 'sync.db'}")
        finally:
            placement.stop()
    if args.only != "sync":
        results["binds"] = bind_throughput(args.arqs, f"sqlite:///{tmp / 'binds.db'}")
    if args.only is None:
        out = REPO / "bench" / "results"
        out.mkdir(parents=True, exist_ok=True)
        (out / "runtime.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

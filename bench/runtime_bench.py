"""Runtime benchmark: Placement sync cost and bind throughput/latency through the binder actors.

    python bench/runtime_bench.py [--hosts 100] [--devices 8] [--arqs 1000]

Starts its own real Placement (shared/tools/run-placement) and a local Ray, prints a table and
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
    from rayborg.actors.placement_client import PlacementClient, provider_uuid
    from rayborg.actors.placement_push import push
    from rayborg.actors.report_apply import apply_report
    from rayborg.drivers.registry import HostDrivers
    from rayborg.store.engine import Store
    from rayborg.store.migrate import upgrade

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

    from rayborg.actors.binder import binder_index
    from rayborg.actors.runtime_config import NAMESPACE, RuntimeConfig, binder_name
    from rayborg.actors.supervisor import Supervisor
    from rayborg.store import arq_state
    from rayborg.store.engine import Store
    from rayborg.store.migrate import upgrade
    from rayborg.store.tables import Deployable, DeviceProfile

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    store = Store(db_url)
    upgrade(store.engine)
    ray.init(address="local", include_dashboard=False, log_to_driver=False, num_cpus=2)
    config = RuntimeConfig(database_url=db_url, fake_devices=f"fpga:{max(arqs // 50, 1)}x50", report_interval=3600)
    sup = Supervisor(config)
    sup.start_singletons()
    sup.reconcile()
    deadline = time.time() + 60
    while time.time() < deadline and not store.query(lambda s: s.exec(select(Deployable)).first()):
        time.sleep(0.1)
    host, deps = store.query(lambda s: (s.exec(select(Deployable)).first().name.split("_")[0],
                                        [d.rp_uuid for d in s.exec(select(Deployable))]))
    store.transact(lambda s: s.add(DeviceProfile(name="bench", groups=[{"resources:FPGA": "1"}])))
    binders = [ray.get_actor(binder_name(i), namespace=NAMESPACE) for i in range(config.binder_count)]
    latencies: list[float] = []

    async def create_and_bind(i: int) -> str:
        """What Nova does for one instance: create the ARQ, bind it, wait until it is resolved."""
        t0 = time.perf_counter()
        arq = (await store.atransact(arq_state.create_arqs, "bench", "p"))[0].uuid
        instance = str(uuidlib.uuid4())
        target = arq_state.BindTarget(host, deps[i % len(deps)], instance, "p")
        await store.atransact(arq_state.start_bind, {arq: target})
        state = (await binders[binder_index(instance, len(binders))].bind.remote([arq]))[arq]
        latencies.append(time.perf_counter() - t0)
        return state

    async def run_all() -> tuple[float, list[str]]:
        sem = asyncio.Semaphore(concurrency)

        async def limited(i: int) -> str:
            async with sem:
                return await create_and_bind(i)

        t0 = time.perf_counter()
        states = await asyncio.gather(*(limited(i) for i in range(arqs)))
        return time.perf_counter() - t0, states

    wall, states = asyncio.run(run_all())
    for a in ray.util.list_named_actors(all_namespaces=True):
        if a["namespace"] == NAMESPACE:
            ray.kill(ray.get_actor(a["name"], namespace=NAMESPACE), no_restart=True)
    ray.shutdown()
    store.dispose()
    lat = sorted(latencies)
    return {"arqs": arqs, "concurrency": concurrency, "bound": states.count("Bound"),
            "wall_seconds": round(wall, 2), "binds_per_second": round(arqs / wall, 1),
            "create_to_bound_p50_ms": round(lat[len(lat) // 2] * 1000, 1),
            "create_to_bound_p99_ms": round(lat[int(len(lat) * 0.99) - 1] * 1000, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--arqs", type=int, default=1000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="rayborg-bench-"))
    placement = PlacementServer().start()
    try:
        sync = placement_sync_cost(placement.url, args.hosts, args.devices, f"sqlite:///{tmp / 'sync.db'}")
    finally:
        placement.stop()
    binds = bind_throughput(args.arqs, f"sqlite:///{tmp / 'binds.db'}")
    results = {"placement_sync": sync, "binds": binds}
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "runtime.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

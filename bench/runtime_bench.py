"""Runtime benchmark: Placement sync cost and bind throughput/latency through the binder actors.

    python bench/runtime_bench.py [--hosts 200] [--devices 8] [--nodes 3] [--arqs 1000] [--only sync|binds]

Placement sync: --hosts simulated hosts x --devices devices, reported from stand-in HostAgents on
--nodes Ray nodes (ray.cluster_utils.Cluster) through Ray to a real PlacementSync, against a real
Placement of its own (tests/service_starters.py) whose access log counts the calls and Placement's own
answering time: the first report, an unchanged re-report, one device added, one host lost. Binds: a
local Ray. Prints the results as JSON and writes bench/results/runtime.json (both halves only).
Figures, not assertions: compare runs on the same machine.
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
sys.path.insert(0, str(REPO / "bench"))


def placement_sync_cost(hosts: int, devices: int, db_url: str, nodes: int = 3) -> dict:
    """Simulated hosts on `nodes` Ray nodes report through Ray to a real PlacementSync, which applies
    them to the store and pushes them to a real Placement of its own. Placement's access log counts
    the calls and the time Placement itself spent answering them."""
    import ray

    from many_hosts import CountedPlacement, HostAgentStandIns, on_node, ray_nodes
    from rayborg.actors.placement_client import PlacementClient
    from rayborg.actors.placement_sync import PlacementSync
    from rayborg.actors.runtime_config import RuntimeConfig
    from rayborg.store.engine import Store
    from rayborg.store.migrate import upgrade
    from rayborg.store.placement_state import provider_uuid

    store = Store(db_url)
    upgrade(store.engine)
    store.dispose()
    placement = CountedPlacement().start()
    client = PlacementClient(placement.url)
    names = [f"bench-host-{i:03d}" for i in range(hosts)]
    for name in names:  # Nova's compute nodes, under which the devices nest
        client._request("POST", "/resource_providers", {"name": name, "uuid": provider_uuid(name)})
    try:
        with ray_nodes(nodes):
            # The store's only writer sits on the head, as the supervisor puts it with SQLite.
            sync = PlacementSync.options(**on_node(0)).remote(
                RuntimeConfig(database_url=db_url, placement_url=placement.url))
            ray.get(sync.status.remote(), timeout=120)
            share = {k: {n: i for i, n in enumerate(names) if i % nodes == k} for k in range(nodes)}
            agents = {k: HostAgentStandIns.options(**on_node(k)).remote(sync, share[k], devices)
                      for k in range(nodes)}
            where = {n: k for k in share for n in share[k]}

            def round_(hostnames: list[str] | None = None) -> dict:
                mark = placement.mark()
                started = time.perf_counter()
                ray.get([a.report.remote(hostnames) for k, a in agents.items()
                         if hostnames is None or any(where[n] == k for n in hostnames)])
                return timed(started, placement.since(mark))

            first = round_()
            unchanged = round_()
            # One device changes: a card is plugged into one host.
            ray.get(agents[0].resize.remote(names[0], devices + 1))
            one = round_([names[0]])
            # A host's node leaves: the supervisor has PlacementSync mark it lost; then a push.
            lost_name = names[-1]
            mark = placement.mark()
            started = time.perf_counter()
            ray.get(sync.host_lost.remote(lost_name))
            ray.get(sync.sync_now.remote())
            lost = timed(started, placement.since(mark))
            lost.update(devices=devices, **reserved_providers(client, provider_uuid(lost_name)))
    finally:
        placement.stop()
    return {"hosts": hosts, "devices_per_host": devices, "ray_nodes": nodes,
            "first_sync": first, "unchanged_rereport": unchanged, "one_device_changed": one,
            "host_lost": lost}


def timed(started: float, load) -> dict:
    """A round's wall time beside what Placement answered in it and its own time for that."""
    wall = time.perf_counter() - started
    return {"seconds": round(wall, 3), "calls": load.total, "writes": load.writes,
            "placement_own_seconds": round(load.busy_s, 3),
            "wall_per_placement_second": round(wall / load.busy_s, 2) if load.busy_s else None}


def reserved_providers(client, compute_uuid: str) -> dict:
    """How many of a compute node's device providers have their whole inventory reserved."""
    providers = [p["uuid"] for p in client.providers_in_tree(compute_uuid) if p["uuid"] != compute_uuid]
    reserved = 0
    for rp in providers:
        inventories = client.get_inventories(rp)[1].values()
        reserved += all(inv["reserved"] >= inv["total"] for inv in inventories)
    return {"providers": len(providers), "providers_reserved": reserved}


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
    parser.add_argument("--hosts", type=int, default=200, help="simulated hosts (Placement sync)")
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--nodes", type=int, default=3, help="Ray nodes the simulated hosts are spread over")
    parser.add_argument("--arqs", type=int, default=1000)
    parser.add_argument("--only", choices=("sync", "binds"), help="one half only (results are not written)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="rayborg-bench-"))
    results = {}
    if args.only != "binds":
        results["placement_sync"] = placement_sync_cost(args.hosts, args.devices, f"sqlite:///{tmp / 'sync.db'}",
                                                        args.nodes)
    if args.only != "sync":
        results["binds"] = bind_throughput(args.arqs, f"sqlite:///{tmp / 'binds.db'}")
    if args.only is None:
        out = REPO / "bench" / "results"
        out.mkdir(parents=True, exist_ok=True)
        (out / "runtime.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

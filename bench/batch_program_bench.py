"""Batch-programming benchmark: one bitstream onto N simulated FPGAs over several Ray "hosts".

    python bench/batch_program_bench.py [--hosts 4] [--devices 50] [--seconds 0.5] [--per-host 4]
                                        [--parallelism 64] [--placement]

Starts its own `ray.cluster_utils.Cluster` (one labelled node per host), a SQLite store and the
rayborg actors (plus a real Placement with --placement), programs every FPGA through
`rayborg.connect(...).program(...)` and prints the wall time against the ideal
(slowest device x ceil(N / effective parallelism)) and the ratio. Writes bench/results/batch_program.json.
Figures, not assertions: compare runs on the same machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "actors"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, default=4)
    ap.add_argument("--devices", type=int, default=50, help="FPGAs per host")
    ap.add_argument("--seconds", type=float, default=0.5, help="simulated programming time per device")
    ap.add_argument("--per-host", type=int, default=4, help="parallelism per host")
    ap.add_argument("--parallelism", type=int, default=64, help="overall parallelism")
    ap.add_argument("--placement", action="store_true", help="mirror into a real Placement as well")
    args = ap.parse_args()

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray.cluster_utils import Cluster
    from runtime_helpers import fresh_store, kill_runtime, make_compute_nodes, start_runtime, wait_for
    from sqlmodel import select

    import rayborg
    from rayborg.actors.runtime_config import NAMESPACE, PLACEMENT_SYNC_NAME, RuntimeConfig
    from rayborg.store.tables import Deployable

    hosts = [f"bench-{i}" for i in range(args.hosts)]
    common = {"include_dashboard": False, "object_store_memory": 80 * 1024**2}
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 2, "labels": {"rayborg-host": hosts[0]}, **common}
    )
    for h in hosts[1:]:
        cluster.add_node(num_cpus=0, labels={"rayborg-host": h}, **common)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    placement = None
    if args.placement:
        from placement_server import PlacementServer

        placement = PlacementServer().start()
        make_compute_nodes(placement.url, hosts)
    tmp = Path(tempfile.mkdtemp(prefix="rayborg-bench-"))
    store = fresh_store(tmp)
    total = args.hosts * args.devices
    config = RuntimeConfig(
        database_url=store.url,
        placement_url=placement.url if placement else None,
        report_interval=300,
        host_overrides={
            h: {
                "fake_devices": f"fpga:{args.devices}",
                "driver_options": {"fake": {"seed": 100 + 37 * i, "program_seconds": args.seconds}},
            }
            for i, h in enumerate(hosts)
        },
    )
    try:
        start_runtime(config)
        wait_for(
            lambda: store.query(lambda s: len(list(s.exec(select(Deployable))))) == total,
            timeout=300,
            what=f"{total} deployables",
        )
        sync = ray.get_actor(PLACEMENT_SYNC_NAME, namespace=NAMESPACE)
        reports_before = ray.get(sync.status.remote())["reports_applied"]
        rb = rayborg.connect(cluster.address, database_url=store.url)  # no `rayborg serve`: name both
        results = rb.program(
            "bench-bitstream",
            {"family": "FPGA"},
            parallelism_per_host=args.per_host,
            parallelism=args.parallelism,
            progress=sys.stderr.isatty(),
        )
        sync_status = ray.get(sync.status.remote())
        ok = [r for r in results if r.ok]
        effective = min(args.parallelism, args.hosts * args.per_host)
        slowest = max((r.duration for r in results), default=0.0)
        ideal_sim = args.seconds * math.ceil(total / effective)
        ideal = slowest * math.ceil(total / effective)
        out = {
            "hosts": args.hosts,
            "devices": total,
            "ok": len(ok),
            "failed": len(results) - len(ok),
            "program_seconds": args.seconds,
            "parallelism_per_host": args.per_host,
            "parallelism": args.parallelism,
            "effective_parallelism": effective,
            "placement": bool(placement),
            "wall_seconds": round(results.wall_seconds, 3),
            "slowest_device_seconds": round(slowest, 3),
            "ideal_seconds": round(ideal, 3),
            "ratio_wall_to_ideal": round(results.wall_seconds / ideal, 3) if ideal else None,
            "ideal_from_simulated_time_seconds": round(ideal_sim, 3),
            "ratio_wall_to_simulated_ideal": round(results.wall_seconds / ideal_sim, 3)
            if ideal_sim
            else None,
            "reports_applied_during_batch": sync_status["reports_applied"] - reports_before,
            "report_apply_p50_s": sync_status["apply_seconds_p50"],
        }
        print(
            f"{total} FPGAs on {args.hosts} hosts, {args.per_host}/host (effective parallelism {effective}), "
            f"{args.seconds}s simulated each: {len(ok)} ok"
        )
        print(
            f"wall {out['wall_seconds']}s; ideal (slowest device {out['slowest_device_seconds']}s x "
            f"ceil({total}/{effective})) {out['ideal_seconds']}s; ratio {out['ratio_wall_to_ideal']}"
        )
        print(
            f"vs the simulated time alone ({ideal_sim:.2f}s): ratio {out['ratio_wall_to_simulated_ideal']}; "
            f"{out['reports_applied_during_batch']} host reports applied during the batch"
        )
        dest = REPO / "bench" / "results" / "batch_program.json"
        dest.parent.mkdir(exist_ok=True)
        dest.write_text(json.dumps(out, indent=2) + "\n")
    finally:
        kill_runtime()
        store.dispose()
        ray.shutdown()
        cluster.shutdown()
        if placement:
            placement.stop()


if __name__ == "__main__":
    main()

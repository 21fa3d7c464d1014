"""rayborg beside OpenStack Cyborg 17 and a bare floor, on this machine, in one run.

    python bench/run.py [--duration 10] [--clients 50] [--rayborg-workers 1] [--skip-cyborg] [--reads-only]
                        [--writes-only] [--sync-only] [--hosts 200] [--quota-rounds 5] [--skip-postgres]

Starts, each on a free 127.0.0.1 port and seeded with the same rows (bench/dataset.py: 20 device
profiles, 200 devices, 1,000 ARQs):
  * rayborg: `rayborg serve` on SQLite, one front door with its Ray actors (startup to first 200 on /v2
    is timed; the reads are measured once the actors are up);
  * Cyborg 17.0.0 from its own virtualenv (bench/cyborg_baseline/install.sh): its API under gunicorn,
    2 workers x 4 threads, at /accelerator, SQLite schema from its models, no auth_token filter;
  * the floor: bench/floor.py, bare aiohttp handlers reading the same rows with sqlite3.
Then, one deployment and one endpoint at a time, bench/loadgen.py (its own process) sends GETs from
50 concurrent clients for 10 s, while the PSS of each deployment's processes is sampled.
Writes (unless --reads-only; needs Debian's rabbitmq-server): Cyborg with RabbitMQ + its conductor (and a
real Placement from tests/service_starters.py), rayborg as `rayborg serve` with its Ray actors, both
sending bind events to bench/nova_standin.py; bench/writes.py measures profile create+delete,
create->Bound and ARQs bound/s, and the PSS of each whole deployment. Then the quota check's cost
(the bind burst and create->Bound against rayborg with quota enforcement off and on, side by side,
--quota-rounds interleaved rounds) and the same burst on PostgreSQL (bench/postgres.py; the row says
why when it cannot run). Last, rayborg's Placement sync cost (--hosts simulated hosts x 8 devices on
3 Ray nodes, reporting through Ray to a real PlacementSync and a Placement of its own: first report,
unchanged re-report, one device added, one host lost; --sync-only runs just that).
Prints a table and writes bench/results/results.{json,md} and bench/results/reads.png.
Figures, not assertions: compare runs on the same machine only.

The work is split: bench/procs.py starts and stops processes, bench/measure.py measures, and
bench/report.py makes the rows, the table, the files and the plot; this file only sequences them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
sys.path.insert(0, str(BENCH))
import measure  # noqa: E402
import procs  # noqa: E402
import report  # noqa: E402
from procs import Deployment  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of load per endpoint (max 60)")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3,
                    help="load rounds per read endpoint for rayborg and the floor (the median is kept); "
                         "Cyborg gets one, its ratios are far from the targets")
    ap.add_argument("--rayborg-workers", type=int, default=1,
                    help="front-door processes, and the floor's (default 1: one front door against the "
                         "one-process floor)")
    ap.add_argument("--startup-runs", type=int, default=3)
    ap.add_argument("--skip-cyborg", action="store_true", help="rayborg and the floor only")
    ap.add_argument("--reads-only", action="store_true", help="no write benchmark (no RabbitMQ, conductor)")
    ap.add_argument("--writes-only", action="store_true",
                    help="only rayborg's writes (no reads, no Cyborg, no Placement sync): print their rows, "
                         "write nothing")
    ap.add_argument("--write-cycles", type=int, default=30,
                    help="sequential create->bind->unbind->delete cycles (and profile create+delete pairs)")
    ap.add_argument("--write-clients", type=int, default=10, help="concurrent clients for binds/s")
    ap.add_argument("--hosts", "--sync-hosts", dest="sync_hosts", type=int, default=200,
                    help="simulated hosts (8 devices each, on 3 Ray nodes) for the Placement sync cost; 0 skips it")
    ap.add_argument("--sync-only", action="store_true",
                    help="only the Placement sync cost: print its rows, write nothing")
    ap.add_argument("--burst", type=int, default=600,
                    help="instances (2 ARQs each) in rayborg's bind burst (also the quota and PostgreSQL bursts)")
    ap.add_argument("--quota-rounds", type=int, default=5,
                    help="interleaved rounds of the quota-off/on comparison (burst and create->Bound); 0 skips it")
    ap.add_argument("--skip-postgres", action="store_true", help="no bind burst on PostgreSQL")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--render-only", action="store_true",
                    help="re-render results.md and reads.png from OUT/results.json without measuring")
    return ap.parse_args(argv)


def seed(work: Path) -> Path:
    """The seeded SQLite database every deployment starts from a copy of."""
    db = work / "seed.db"
    procs.seed_rayborg(f"sqlite:///{db}")
    return db


def copy_db(seeded: Path, path: Path) -> Path:
    shutil.copy(seeded, path)
    return path


def rayborg_writes(res: dict, args: argparse.Namespace, work: Path, seeded: Path, nova_url: str,
                   deps: list[Deployment]) -> None:
    """rayborg's write rows, then the quota check's cost and the burst on PostgreSQL."""
    print("starting rayborg with its Ray runtime for writes ...", flush=True)
    wdb = copy_db(seeded, work / "rayborg-writes.db")
    rf = procs.start_rayborg_full(work, f"sqlite:///{wdb}", nova_url)
    deps.append(rf)
    res["writes"]["rayborg"] = measure.measure_writes(rf, args.write_cycles, args.write_clients, args.duration,
                                                      args.burst, nova_url)
    rf.stop()
    if args.quota_rounds > 0:
        print(f"quota check: quota off and on, {args.quota_rounds} interleaved round(s) ...", flush=True)
        res["quota"] = measure.measure_quota_cost(work, seeded, nova_url, args.write_cycles, args.burst,
                                                  args.quota_rounds)
        print(f"  limits the front doors report: {res['quota'].get('limits_seen')}", flush=True)
        print(f"  cost: create->Bound {res['quota']['create_to_bound_cost_pct']} %, burst "
              f"{res['quota']['burst_cost_pct']} %", flush=True)
    if not args.skip_postgres:
        print("bind burst on PostgreSQL ...", flush=True)
        res["postgres"] = measure.measure_postgres_burst(work, nova_url, args.write_cycles, args.burst)


def stop_all(work: Path, deps: list[Deployment], stops: list, *, keep: bool) -> None:
    """After a run: the deployments stopped, then the helper services, and the work directory
    removed (unless `keep`: then where it is is said)."""
    for d in deps:
        d.stop()
    for stop in stops:
        stop()
    if keep:
        print(f"work directory kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


def writes_only(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="rayborg-writes-"))
    res: dict = {"environment": report.environment(), "writes": {}}
    deps: list[Deployment] = []
    stops: list = []
    try:
        seeded = seed(work)
        stops, urls = procs.start_helper_services(work, placement=False)
        rayborg_writes(res, args, work, seeded, urls["nova_url"], deps)
    finally:
        stop_all(work, deps, stops, keep=args.keep)
    res["environment"]["loadavg_after"] = report.loadavg()
    print(f"\n{report.describe(res['environment'])}")
    report.print_table(report.table(report.write_rows(res)))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render_only:
        report.write_outputs(json.loads((args.out / "results.json").read_text()), args.out)
        return 0
    if args.sync_only:
        work = Path(tempfile.mkdtemp(prefix="rayborg-sync-"))
        try:
            env = report.environment()
            rows = report.sync_rows(measure.measure_sync(args.sync_hosts, work))
            env["loadavg_after"] = report.loadavg()
            print(f"\n{report.describe(env)}")
            report.print_table(report.table(rows))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return 0
    args.duration = min(args.duration, 60.0)
    if args.writes_only:
        return writes_only(args)
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="rayborg-sxs-"))
    res: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "clients": args.clients,
                 "duration_s": args.duration, "rayborg_workers": args.rayborg_workers, "notes": [],
                 "environment": report.environment()}
    deps: list[Deployment] = []
    helper_stops: list = []
    t0 = time.perf_counter()
    try:
        seeded = seed(work)
        db = copy_db(seeded, work / "rayborg.db")
        floor_db = copy_db(seeded, work / "floor.db")

        print("starting rayborg ...", flush=True)
        rb, startup = procs.start_rayborg(work, f"sqlite:///{db}", args.rayborg_workers, args.startup_runs)
        deps.append(rb)
        res["rayborg_startup_s"] = [round(s, 3) for s in startup]
        print(f"  rayborg serve -> first 200 on /v2: {', '.join(f'{s:.2f}' for s in startup)} s", flush=True)
        print("starting the floor ...", flush=True)
        fl = procs.start_floor(work, floor_db, args.rayborg_workers)
        deps.append(fl)
        print(f"reads: rayborg and the floor taking turns, {args.rounds} round(s) ...", flush=True)
        both = measure.measure([rb, fl], args.clients, args.duration, args.rounds)
        res["rayborg"], res["floor"], res["rounds"] = both[rb.name], both[fl.name], args.rounds
        rb.stop()
        fl.stop()

        venv = version = None
        if not args.skip_cyborg:
            print("preparing Cyborg 17's virtualenv (installed on first use) ...", flush=True)
            venv, version = procs.cyborg_venv()
            res["cyborg_version"] = version
        writes = None
        if not args.reads_only:
            if args.skip_cyborg or procs.rabbitmq_installed():
                print("starting Placement and the Nova stand-in for writes ...", flush=True)
                stops, writes = procs.start_helper_services(work)
                helper_stops.extend(stops)
            else:
                res["notes"].append("Writes skipped: rabbitmq-server is not installed (apt-get install "
                                    "rabbitmq-server); Cyborg's writes need its conductor over RabbitMQ.")
        res["writes"] = {}
        if venv is not None:
            print("starting Cyborg 17" + (" (API, conductor, RabbitMQ)" if writes else " (API)") + " ...", flush=True)
            cy = procs.start_cyborg(work, venv, writes)
            deps.append(cy)
            res["cyborg_startup_s"] = round(cy.startup_s, 2)
            res["cyborg"] = measure.measure([cy], args.clients, args.duration)[cy.name]
            if writes:
                res["writes"]["cyborg"] = measure.measure_writes(cy, args.write_cycles, args.write_clients,
                                                                 args.duration, report.CYBORG_BURST,
                                                                 writes["nova_url"])
            cy.stop()
            res["notes"].append("Cyborg startup: gunicorn start to first 200 on /accelerator/v2 (one run; with "
                                "writes, RabbitMQ and the conductor were started before it).")
        else:
            res["notes"].append("Cyborg skipped (--skip-cyborg): ratios against it are empty.")
        if writes:
            rayborg_writes(res, args, work, seeded, writes["nova_url"], deps)
            if args.sync_hosts > 0:
                res["placement_sync"] = measure.measure_sync(args.sync_hosts, work)
    finally:
        stop_all(work, deps, helper_stops, keep=args.keep)
    for name, w in res.get("writes", {}).items():
        if w.get("failed"):
            res["notes"].append(f"{name}'s write benchmark failed, its write rows are empty: {w['failed']}")
    for mode in ("off", "on"):
        if (res.get("quota") or {}).get(mode, {}).get("failed"):
            res["notes"].append(f"quota-{mode} write rounds failed: {res['quota'][mode]['failed']}")
    if (res.get("postgres") or {}).get("unavailable"):
        res["notes"].append(f"The bind burst on PostgreSQL did not run: {res['postgres']['unavailable']}")
    res["environment"]["loadavg_after"] = report.loadavg()
    res["total_s"] = round(time.perf_counter() - t0, 1)
    # Only the load before the run tells of other work: during and after it, the load is the run's own.
    before = float(res["environment"]["loadavg_before"].split()[0])
    if before > (os.cpu_count() or 1) / 2:
        res["notes"].append(f"The machine was busy when this run started (1-minute load average {before:.2f} on "
                            f"{os.cpu_count()} CPUs: other work shared these cores), so absolute figures are low "
                            "and noisy; the ratios, measured in the same run, are what to compare.")
    report.write_outputs(res, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Measurement for bench/run.py: the read load (bench/loadgen.py in its own process, deployments
taking turns), the write runs (bench/writes.py), the cost of the quota check (the same burst and
create->Bound against two deployments, quota enforcement off and on, interleaved), the bind burst on
PostgreSQL, the Placement sync cost (bench/runtime_bench.py) and memory (PSS from smaps_rollup).
It starts nothing of its own but through bench/procs.py, and formats nothing (bench/report.py).
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Self

import procs
from procs import BENCH, Deployment, dataset

ENDPOINTS = [  # (key, label, path)
    ("device_profiles", "list device profiles (20)", "/v2/device_profiles"),
    ("arqs", "list ARQs (1,000)", "/v2/accelerator_requests"),
    ("devices", "list devices (200)", "/v2/devices"),
    ("arq_show", "show one ARQ", f"/v2/accelerator_requests/{dataset.show_arq_uuid()}"),
]
# quota enforcement on, never refusing: every resource class limited, far above what the run holds
# (FPGA named too: /v2/quotas/usage lists a class with a limit of its own, which shows the config was read)
QUOTA_ON_CONFIG = "[quota]\ndefault = 1000000\nFPGA = 1000000\n"


# ---------------------------------------------------------------- memory (PSS from smaps_rollup)

def pss_mib(pids: list[int]) -> float:
    total_kib = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total_kib += int(line.split()[1])
                        break
        except OSError:
            continue
    return round(total_kib / 1024, 1)


def deployment_pss(dep: Deployment) -> float:
    return pss_mib(dep.pids())


def front_pss(dep: Deployment) -> float:
    return pss_mib(dep.front_pids())


class PssSampler:
    """Samples the PSS of a deployment every `interval` s in a thread; keeps the maximum."""

    def __init__(self, dep: Deployment, interval: float = 0.5, front_only: bool = False):
        self.dep, self.interval, self.peak, self.front_only = dep, interval, 0.0, front_only
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, front_pss(self.dep) if self.front_only else deployment_pss(self.dep))
            self._stop.wait(self.interval)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------- reads

def load(url: str, clients: int, duration: float) -> dict:
    cmd = [sys.executable, str(BENCH / "loadgen.py"), url, "--clients", str(clients), "--duration", str(duration)]
    for k, v in dataset.HEADERS.items():
        cmd += ["--header", f"{k}:{v}"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=duration + 120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def warm(dep: Deployment) -> None:
    for _key, _label, path in ENDPOINTS:
        for _ in range(4):
            status = procs.get_status(dep.base_url + path, dataset.HEADERS, timeout=60)
            if status != 200:
                raise RuntimeError(f"{dep.name} {path}: HTTP {status} (see {dep.log})")


def measure(deps: list[Deployment], clients: int, duration: float, rounds: int = 1) -> dict[str, dict]:
    """Each endpoint of each deployment under load `rounds` times, the deployments taking turns
    within a round so that all of them see the same machine; per endpoint, the median round by
    req/s is kept (with its own p50/p99) and every round's req/s is listed. Rounds matter on a
    shared 2-core VM: the same deployment measured twice can differ by 2x."""
    out: dict[str, dict] = {}
    peaks: dict[str, float] = {}
    for dep in deps:
        warm(dep)
        out[dep.name] = {"pss_idle_mib": front_pss(dep), "processes": len(dep.front_pids()), "endpoints": {}}
        peaks[dep.name] = 0.0
    runs: dict[tuple[str, str], list[dict]] = {}
    for n in range(rounds):
        for key, _label, path in ENDPOINTS:
            for dep in deps:
                with PssSampler(dep, front_only=True) as sampler:
                    e = load(dep.base_url + path, clients, duration)
                peaks[dep.name] = max(peaks[dep.name], sampler.peak)
                runs.setdefault((dep.name, key), []).append(e)
                print(f"  {dep.name:8s} {key:16s} {e['req_s']:9.1f} req/s  p50 {e['p50_ms']} ms  "
                      f"p99 {e['p99_ms']} ms  errors {e['errors']}" + (f"  (round {n + 1})" if rounds > 1 else ""),
                      flush=True)
    for (name, key), results in runs.items():
        median = sorted(results, key=lambda e: e["req_s"])[(len(results) - 1) // 2]
        out[name]["endpoints"][key] = {**median, "rounds_req_s": [e["req_s"] for e in results],
                                       "errors": sum(e["errors"] for e in results)}
    for dep in deps:
        out[dep.name]["pss_load_mib"] = peaks[dep.name]
    return out


# ---------------------------------------------------------------- writes

def run_writes(dep: Deployment, nova_url: str, *, cycles: int, clients: int = 10, duration: float = 10.0,
               burst: int = 0, parts: str = "profiles,sequential,concurrent,burst") -> dict:
    """bench/writes.py against `dep` in its own process; {"failed": why} when it fails."""
    out = subprocess.run([sys.executable, str(BENCH / "writes.py"), dep.base_url, "--cycles", str(cycles),
                          "--clients", str(clients), "--duration", str(duration), "--burst", str(burst),
                          "--nova", nova_url.removesuffix("/v2.1"), "--parts", parts],
                         capture_output=True, text=True, timeout=900)
    if out.returncode != 0:  # one deployment's failed write run must not lose the rest of the results
        print(f"  {dep.name}: writes.py failed (exit {out.returncode}):\n{out.stderr[-3000:]}", flush=True)
        return {"failed": f"writes.py exit {out.returncode}: {out.stderr.strip().splitlines()[-1:]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_writes(dep: Deployment, cycles: int, clients: int, duration: float, burst: int, nova_url: str) -> dict:
    idle = deployment_pss(dep)
    with PssSampler(dep) as sampler:
        res = run_writes(dep, nova_url, cycles=cycles, clients=clients, duration=duration, burst=burst)
    if res.get("failed"):
        return res
    res.update(pss_idle_mib=idle, pss_load_mib=sampler.peak, processes=len(dep.pids()),
               startup_s=round(dep.startup_s, 2) if dep.startup_s else None)
    b, c = res["bind_sequential"], res["bind_concurrent"]
    print(f"  {dep.name:12s} profile create+delete p50 {res['profile_create_delete']['p50_ms']} ms; create->Bound "
          f"p50 {b['create_to_bound_p50_ms']} ms ({b['bound_cycles']}/{b['cycles']} bound, bind HTTP {b['bind_status']}); "
          f"{c['binds_per_s']} ARQs/s in cycles with {c['clients']} clients; burst "
          f"{res.get('bind_burst', {}).get('binds_per_s')} binds/s; PSS idle {idle} MiB", flush=True)
    return res


def _burst_and_sequential(dep: Deployment, nova_url: str, cycles: int, burst: int) -> dict:
    """One round: create->Bound `cycles` times from one client, then the burst of `burst` instances."""
    res = run_writes(dep, nova_url, cycles=cycles, burst=burst, parts="sequential,burst")
    if res.get("failed"):
        return res
    b, s = res.get("bind_burst", {}), res.get("bind_sequential", {})
    return {"binds_per_s": b.get("binds_per_s"), "burst_seconds": b.get("seconds_to_last_event"),
            "arqs": b.get("arqs"), "states": b.get("states"), "nova_events": b.get("nova_events"),
            "create_to_bound_p50_ms": s.get("create_to_bound_p50_ms"),
            "bound_cycles": s.get("bound_cycles"), "cycles": s.get("cycles"), "status_codes": res.get("status_codes")}


def _median(rounds: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rounds if r.get(key) is not None]
    return round(statistics.median(vals), 2) if vals else None


def measure_quota_cost(work: Path, seeded_db: Path, nova_url: str, cycles: int, burst: int, rounds: int) -> dict:
    """The quota check's cost (issue 17): two `rayborg serve` with their Ray runtime, side by side on
    copies of the same seeded SQLite database, quota enforcement off (no [quota]) and on ([quota]
    default = 1,000,000: every bind checked, none refused); `rounds` rounds of create->Bound (one
    client) and the bind burst against each, taking turns (the first of a round alternates). The cost
    is in time, from each round's pair: (on / off - 1) of create->Bound p50 and of the burst's
    seconds per ARQ (off binds/s / on binds/s - 1); the median over the rounds is kept."""
    deps: dict[str, Deployment] = {}
    out: dict = {"rounds": rounds, "cycles": cycles, "burst_instances": burst, "config_on": QUOTA_ON_CONFIG}
    try:
        for mode, config in (("off", None), ("on", procs.write_config(work / "quota-on.toml", QUOTA_ON_CONFIG))):
            db = work / f"rayborg-quota-{mode}.db"
            shutil.copy(seeded_db, db)
            print(f"  starting rayborg serve, quota {mode} ...", flush=True)
            deps[mode] = procs.start_rayborg_full(work, f"sqlite:///{db}", nova_url, f"rayborg-quota-{mode}", config)
        out["limits_seen"] = {mode: quota_limits_seen(dep) for mode, dep in deps.items()}
        runs: dict[str, list[dict]] = {"off": [], "on": []}
        for n in range(rounds):
            for mode in (("off", "on") if n % 2 == 0 else ("on", "off")):
                r = _burst_and_sequential(deps[mode], nova_url, cycles, burst)
                runs[mode].append(r)
                print(f"  quota {mode:3s} round {n + 1}: create->Bound p50 {r.get('create_to_bound_p50_ms')} ms; "
                      f"burst {r.get('binds_per_s')} binds/s ({r.get('arqs')} ARQs)"
                      + (f"  FAILED {r['failed']}" if r.get("failed") else ""), flush=True)
    finally:
        for dep in deps.values():
            dep.stop()
    for mode, rs in runs.items():
        out[mode] = {"rounds": rs, "create_to_bound_p50_ms": _median(rs, "create_to_bound_p50_ms"),
                     "binds_per_s": _median(rs, "binds_per_s"),
                     "failed": [r["failed"] for r in rs if r.get("failed")] or None}
    # Each round's cost from its own pair (on and off measured back to back, so a change of the
    # machine's load between rounds cancels), then the median over the rounds. Time per ARQ is
    # 1 / rate: the burst takes off/on - 1 longer with the check.
    pairs = list(zip(runs["off"], runs["on"]))
    for key, costs in (
            ("create_to_bound_cost_pct", [cost_pct(on.get("create_to_bound_p50_ms"), off.get("create_to_bound_p50_ms"))
                                          for off, on in pairs]),
            ("burst_cost_pct", [cost_pct(off.get("binds_per_s"), on.get("binds_per_s")) for off, on in pairs])):
        costs = [c for c in costs if c is not None]
        out[key + "_rounds"] = costs
        out[key] = round(statistics.median(costs), 1) if costs else None
    return out


def quota_limits_seen(dep: Deployment) -> dict | str:
    """The limits the front door reports for the benchmark's project (GET /v2/quotas/usage):
    {"FPGA": 1000000} with quota on, {} with it off; the error as text when it cannot be read."""
    url = f"{dep.base_url}/v2/quotas/usage?project_id={dataset.PROJECT_ID}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=dataset.HEADERS), timeout=10) as r:
            items = json.loads(r.read())["quota_usages"]
    except (OSError, ValueError, KeyError) as e:
        return f"unreadable: {e}"
    return {i["resource"]: i["limit"] for i in items if i.get("limit") not in (None, -1)}


def cost_pct(slower: float | None, faster: float | None) -> float | None:
    """(slower / faster - 1) in %: what the check adds to the time (negative: lost in the noise)."""
    if not slower or not faster:
        return None
    return round((slower / faster - 1) * 100, 1)


def measure_postgres_burst(work: Path, nova_url: str, cycles: int, burst: int, rounds: int = 1) -> dict:
    """The bind burst (and create->Bound) against `rayborg serve` on a throwaway PostgreSQL seeded
    with the same rows; {"unavailable": why} when PostgreSQL cannot run here or does not start."""
    import postgres

    why = postgres.unavailable()
    if why:
        print(f"  PostgreSQL burst skipped: {why}", flush=True)
        return {"unavailable": why}
    try:
        pg = postgres.Postgres().start()
    except Exception as e:  # noqa: BLE001 - the row says why, the run goes on
        print(f"  PostgreSQL did not start: {e}", flush=True)
        return {"unavailable": f"PostgreSQL did not start: {str(e)[:300]}"}
    dep = None
    try:
        url = pg.create_database()
        procs.seed_rayborg(url)
        print("  starting rayborg serve on PostgreSQL ...", flush=True)
        dep = procs.start_rayborg_full(work, url, nova_url, "rayborg-postgres")
        rs = []
        for n in range(rounds):
            r = _burst_and_sequential(dep, nova_url, cycles, burst)
            rs.append(r)
            print(f"  PostgreSQL round {n + 1}: create->Bound p50 {r.get('create_to_bound_p50_ms')} ms; "
                  f"burst {r.get('binds_per_s')} binds/s ({r.get('arqs')} ARQs)"
                  + (f"  FAILED {r['failed']}" if r.get("failed") else ""), flush=True)
        return {"rounds": rs, "binds_per_s": _median(rs, "binds_per_s"),
                "create_to_bound_p50_ms": _median(rs, "create_to_bound_p50_ms"),
                "arqs": rs[-1].get("arqs"), "states": rs[-1].get("states"),
                "failed": [r["failed"] for r in rs if r.get("failed")] or None}
    except Exception as e:  # noqa: BLE001
        print(f"  PostgreSQL burst failed: {e}", flush=True)
        return {"unavailable": f"failed: {str(e)[:300]}"}
    finally:
        if dep is not None:
            dep.stop()
        pg.stop()


# ---------------------------------------------------------------- Placement sync

def measure_sync(hosts: int, work: Path) -> dict:
    """bench/runtime_bench.py's Placement sync cost: its own Placement and 3 Ray nodes."""
    from runtime_bench import placement_sync_cost

    print(f"Placement sync cost, {hosts} hosts x 8 devices on 3 Ray nodes ...", flush=True)
    sync = placement_sync_cost(hosts, 8, f"sqlite:///{work / 'sync.db'}", nodes=3)
    for phase in ("first_sync", "unchanged_rereport", "one_device_changed", "host_lost"):
        print(f"  {phase}: {sync[phase]}", flush=True)
    return sync

"""Where the memory of a default `rayborg serve` goes, and how long it takes to come up.

    python bench/memory_breakdown.py [--runs 3] [--settle 10] [--samples 3] [-- SERVE ARGS...]

Each run starts `rayborg serve` as a user would (SQLite in a temp directory, a free port, Ray and its
actors on, RAYBORG_CONFIG pointing at an empty file), times from the process start to the first 200
on /v2 and on /v2/device_profiles and to the actors being up (serve's log line), waits `--settle`
seconds for the deployment to go idle, then prints the PSS (`/proc/PID/smaps_rollup`) of every
process of serve's process tree and of its Ray session (processes naming its GCS address), by name,
and the total (also USS, which other programs on the box do not lower, the steadier figure to compare two
settings by). With several runs, the timings, each process and the totals are also given as medians.
Figures, not assertions: on a shared box, compare medians of several runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import pss_mib  # noqa: E402  (bench/run.py's helpers)
from procs import free_port, get_status, process_tree  # noqa: E402

ACTORS_UP = re.compile(r"actors up|actors on, Ray at")  # serve's log line once the actors answer
RAY_ADDRESS = re.compile(r"Ray started locally \(address ([\d.]+:\d+)")


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def name_of(pid: int) -> str:
    """A readable name: Ray's process titles (ray::Binder, ray::IDLE, ray-dashboard-NodeHead-0), a
    Python script's or module's name, else the program's."""
    args = cmdline(pid)
    if not args:
        return "?"
    first = args[0].split()[0] if args[0].startswith(("ray::", "ray-dashboard")) else args[0]
    if first.startswith(("ray::", "ray-dashboard")):
        return first
    if Path(first).name.startswith("python"):
        for i, arg in enumerate(args[1:], 1):
            if arg == "-m" and i + 1 < len(args):
                return " ".join(args[i + 1:i + 3])
            if arg.endswith(".py"):
                return Path(arg).name
    return Path(first).name


def session_pids(gcs_address: str | None) -> list[int]:
    """Processes whose command line names this Ray session's GCS address (Ray's own services)."""
    if not gcs_address:
        return []
    return [int(e) for e in os.listdir("/proc")
            if e.isdigit() and any(gcs_address in a for a in cmdline(int(e)))]


def uss_mib(pid: int) -> float:
    """Pages only this process maps (Private_Clean + Private_Dirty): unlike PSS, it does not drop when
    other programs on the box (other Ray clusters, other tests) map the same libraries, so it is the
    steadier figure to compare two settings by on a shared box."""
    kib = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith(("Private_Clean:", "Private_Dirty:")):
                    kib += int(line.split()[1])
    except OSError:
        return 0.0
    return round(kib / 1024, 1)


def pss_by_process(pids: list[int]) -> list[tuple[int, str, float, float]]:
    return sorted(((pid, name_of(pid), pss_mib([pid]), uss_mib(pid)) for pid in pids), key=lambda r: -r[2])


def wait(predicate, timeout: float, proc: subprocess.Popen, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"rayborg serve exited with {proc.returncode} while waiting for {what}")
        if predicate():
            return time.monotonic()
        time.sleep(0.01)
    raise RuntimeError(f"{what} not within {timeout} s")


def one_run(args, work: Path) -> dict:
    port = free_port()
    config = work / "empty.toml"
    config.touch()
    log = work / f"serve-{port}.log"
    env = dict(os.environ, RAYBORG_CONFIG=str(config), RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "rayborg", "serve", "--port", str(port),
           "--database-url", f"sqlite:///{work / f'rayborg-{port}.db'}", *args.serve_args]
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    # cwd: the rayborg that is installed (or on $PYTHONPATH, to measure another checkout), not ./rayborg
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=work,
                            start_new_session=True)
    extra: list[int] = []
    try:
        return measure(args, proc, base, log, started, extra)
    except RuntimeError:
        sys.stderr.write(log.read_text()[-4000:])
        raise
    finally:
        stop(proc, extra)


def measure(args, proc: subprocess.Popen, base: str, log: Path, started: float, extra: list[int]) -> dict:
    """Timings, then the idle PSS by process (`extra`: Ray's processes outside serve's tree, to stop)."""
    v2 = wait(lambda: get_status(base + "/v2", timeout=1.0) == 200, 120, proc, "/v2") - started
    profiles = wait(lambda: get_status(base + "/v2/device_profiles", timeout=1.0) == 200, 120, proc,
                    "/v2/device_profiles") - started
    actors = wait(lambda: ACTORS_UP.search(log.read_text()), 120, proc, "the actors") - started
    time.sleep(args.settle)
    found = RAY_ADDRESS.search(log.read_text())
    gcs = found.group(1) if found else None
    samples = []
    for _ in range(args.samples):
        tree = set(process_tree(proc.pid))
        extra[:] = [p for p in session_pids(gcs) if p not in tree]
        samples.append(pss_by_process(sorted(tree | set(extra))))
        time.sleep(1.0)
    rows = min(samples, key=lambda s: abs(sum(r[2] for r in s) - statistics.median(
        sum(r[2] for r in x) for x in samples)))  # the sample of median total
    return {"v2_s": round(v2, 2), "device_profiles_s": round(profiles, 2), "actors_up_s": round(actors, 2),
            "total_mib": round(sum(r[2] for r in rows), 1),
            "total_uss_mib": round(sum(r[3] for r in rows), 1),
            "processes": len(rows),
            "by_process": [{"pid": p, "name": n, "pss_mib": m, "uss_mib": u} for p, n, m, u in rows]}


def stop(proc: subprocess.Popen, extra: list[int]) -> None:
    """SIGTERM to serve, then SIGKILL to its session and to Ray's processes found outside its tree
    (only what this script started)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
    kills = [lambda: os.killpg(proc.pid, signal.SIGKILL),
             *[lambda p=p: os.kill(p, signal.SIGKILL) for p in extra]]
    for kill in kills:
        try:
            kill()
        except (ProcessLookupError, PermissionError):
            pass
    proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1, help="serve starts to measure (default 1)")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds idle before measuring PSS")
    parser.add_argument("--samples", type=int, default=3, help="PSS samples per run, 1 s apart (median kept)")
    parser.add_argument("--json", action="store_true", help="print the runs as JSON")
    parser.add_argument("serve_args", nargs="*", help="more `rayborg serve` arguments (after --)")
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory(prefix="rayborg-mem-") as tmp:
        for _ in range(args.runs):
            runs.append(one_run(args, Path(tmp)))
            if not args.json:
                run = runs[-1]
                for row in run["by_process"]:
                    print(f"{row['pid']:>8}  {row['name'][:52]:<52} {row['pss_mib']:>7.1f} MiB PSS "
                          f"{row['uss_mib']:>7.1f} MiB USS")
                print(f"total {run['total_mib']} MiB PSS ({run['total_uss_mib']} MiB USS) in "
                      f"{run['processes']} processes; first 200 on /v2 "
                      f"{run['v2_s']} s, on /v2/device_profiles {run['device_profiles_s']} s; actors up "
                      f"{run['actors_up_s']} s\n", flush=True)
    if args.json:
        print(json.dumps(runs, indent=1))
    elif len(runs) > 1:
        keys = ("total_mib", "total_uss_mib", "v2_s", "device_profiles_s", "actors_up_s")
        med = {k: round(statistics.median(r[k] for r in runs), 2) for k in keys}
        names = sorted({row["name"] for r in runs for row in r["by_process"]})
        print(f"median of {len(runs)} by process (PSS, USS MiB):")
        for name in sorted(names, key=lambda n: -statistics.median(
                sum(row["pss_mib"] for row in r["by_process"] if row["name"] == n) for r in runs)):
            pss = statistics.median(sum(row["pss_mib"] for row in r["by_process"] if row["name"] == name)
                                    for r in runs)
            uss = statistics.median(sum(row["uss_mib"] for row in r["by_process"] if row["name"] == name)
                                    for r in runs)
            print(f"  {name[:52]:<52} {pss:>7.1f} {uss:>7.1f}")
        print(f"median of {len(runs)}: total {med['total_mib']} MiB PSS ({med['total_uss_mib']} MiB USS); "
              f"/v2 {med['v2_s']} s; "
              f"/v2/device_profiles {med['device_profiles_s']} s; actors up {med['actors_up_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

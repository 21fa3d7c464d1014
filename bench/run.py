"""rayborg beside OpenStack Cyborg 17 and a bare floor, on this machine, in one run.

    python bench/run.py [--duration 10] [--clients 50] [--rayborg-workers 1] [--skip-cyborg] [--reads-only]

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
create->Bound and ARQs bound/s, and the PSS of each whole deployment. Last, rayborg's Placement sync
cost (--hosts simulated hosts x 8 devices on 3 Ray nodes, reporting through Ray to a real PlacementSync
and a Placement of its own: first report, unchanged re-report, one device added, one host lost;
--sync-only runs just that).
Prints a table and writes bench/results/results.{json,md} and bench/results/reads.png.
Figures, not assertions: compare runs on the same machine only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Self

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
sys.path.insert(0, str(BENCH))
sys.path.insert(1, str(REPO / "tests"))
import dataset
from service_starters import Placement

ENDPOINTS = [  # (key, label, path)
    ("device_profiles", "list device profiles (20)", "/v2/device_profiles"),
    ("arqs", "list ARQs (1,000)", "/v2/accelerator_requests"),
    ("devices", "list devices (200)", "/v2/devices"),
    ("arq_show", "show one ARQ", f"/v2/accelerator_requests/{dataset.show_arq_uuid()}"),
]
READ_RATIO_TARGET = 10.0      # rayborg req/s >= 10x Cyborg's
P99_RATIO_TARGET = 0.1        # rayborg p99 <= 1/10 of Cyborg's
# rayborg req/s against the floor, one process each (issue 18 item 3): small answers near it, long lists
FLOOR_RATIO_TARGETS = {"device_profiles": 0.8, "arq_show": 0.8, "arqs": 0.6, "devices": 0.6}
IDLE_PSS_TARGET_MIB = 1024.0  # single box idle PSS <= 1 GiB


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_status(url: str, headers: dict | None = None, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def wait_200(url: str, deadline_s: float, proc: subprocess.Popen | None = None) -> float:
    """Seconds until `url` answers 200 (polled every 10 ms); raises if it never does."""
    started = time.perf_counter()
    while time.perf_counter() - started < deadline_s:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        if get_status(url, dataset.HEADERS, timeout=1.0) == 200:
            return time.perf_counter() - started
        time.sleep(0.01)
    raise RuntimeError(f"{url} did not answer 200 within {deadline_s} s")


# ---------------------------------------------------------------- memory (PSS from smaps_rollup)

def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def process_tree(root: int) -> list[int]:
    kids = _children_map()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


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


class PssSampler:
    """Samples the PSS of a deployment every `interval` s in a thread; keeps the maximum."""

    def __init__(self, dep: Deployment, interval: float = 0.5, front_only: bool = False):
        self.dep, self.interval, self.peak, self.front_only = dep, interval, 0.0, front_only
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.dep.front_pss() if self.front_only else self.dep.pss())
            self._stop.wait(self.interval)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------- deployments

class Deployment:
    """One deployment: its front process plus any helpers (conductor, RabbitMQ), each in its own session."""

    def __init__(self, name: str, base_url: str, proc: subprocess.Popen, log: Path):
        self.name, self.base_url, self.proc, self.log = name, base_url, proc, log
        self.helpers: list[subprocess.Popen] = []
        self.startup_s: float | None = None

    def pids(self) -> list[int]:
        return [p for proc in [self.proc, *self.helpers] for p in process_tree(proc.pid)]

    def pss(self) -> float:
        return pss_mib(self.pids())

    def front_pss(self) -> float:
        """The API server alone (rayborg's front door, Cyborg's gunicorn master + workers)."""
        return pss_mib(process_tree(self.proc.pid))

    def stop(self) -> None:
        for proc in [self.proc, *reversed(self.helpers)]:
            stop_process(proc)


def stop_process(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM to the process itself (as an operator would), then SIGKILL to its whole session (only
    what this benchmark started) if it has not exited within `grace` seconds."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


def spawn(cmd: list[str], log: Path, env: dict | None = None, cwd: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env, cwd=cwd,
                            start_new_session=True)


def rayborg_cmd(db_url: str, port: int, workers: int) -> list[str]:
    """As `rayborg serve` starts by default: its Ray actors on, `workers` front doors (1 by default)."""
    return [sys.executable, "-m", "rayborg", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--database-url", db_url, "--workers", str(workers)]


def start_rayborg(work: Path, db_url: str, workers: int, startup_runs: int) -> tuple[Deployment, list[float]]:
    """Start `rayborg serve` `startup_runs` times, timing each to the first 200 on /v2; keep the last."""
    times = []
    for i in range(startup_runs):
        port = free_port()
        proc = spawn(rayborg_cmd(db_url, port, workers), work / "rayborg.log")
        dep = Deployment("rayborg", f"http://127.0.0.1:{port}", proc, work / "rayborg.log")
        times.append(wait_200(dep.base_url + "/v2", 60, proc))
        if i < startup_runs - 1:
            dep.stop()
    # the reads are measured with the actors running beside the front door (issue 18 item 3)
    wait_actors_up(dep.base_url, 180, proc)
    time.sleep(2.0)  # every front-door process up, the actors' first sweep done
    return dep, times


def start_floor(work: Path, db: Path, workers: int) -> Deployment:
    port = free_port()
    proc = spawn([sys.executable, str(BENCH / "floor.py"), "--db", str(db), "--port", str(port),
                  "--workers", str(workers)], work / "floor.log")
    dep = Deployment("floor", f"http://127.0.0.1:{port}", proc, work / "floor.log")
    wait_200(dep.base_url + "/v2", 30, proc)
    time.sleep(1.0)
    return dep


def cyborg_venv() -> tuple[Path, str]:
    venv = subprocess.run(["bash", str(BENCH / "cyborg_baseline" / "install.sh")], check=True,
                          capture_output=True, text=True).stdout.strip().splitlines()[-1]
    py = Path(venv) / "bin" / "python"
    version = subprocess.run([str(py), "-c", "import importlib.metadata as m; print(m.version('openstack-cyborg'))"],
                             check=True, capture_output=True, text=True).stdout.strip()
    return Path(venv), version


def wait_port(port: int, deadline_s: float, proc: subprocess.Popen) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < deadline_s:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before port {port} opened")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return time.perf_counter() - started
        time.sleep(0.1)
    raise RuntimeError(f"port {port} did not open within {deadline_s} s")


def start_cyborg(work: Path, venv: Path, writes: dict | None) -> Deployment:
    """Cyborg's API under gunicorn; with `writes` ({"placement_url", "nova_url"}) also RabbitMQ and
    its conductor, which device-profile and ARQ writes go through."""
    log = work / "cyborg.log"
    py = venv / "bin" / "python"
    cdir = work / "cyborg"
    rabbit_port = free_port()
    cmd = [str(py), str(BENCH / "cyborg_baseline" / "prepare.py"), str(cdir), "--rabbit-port", str(rabbit_port)]
    if writes:
        cmd += ["--placement-url", writes["placement_url"], "--nova-url", writes["nova_url"]]
    conf = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()
    env = dict(os.environ, CYBORG_BENCH_CONF=conf, SCRIPT_NAME="/accelerator", PYTHONWARNINGS="ignore")
    helpers: list[subprocess.Popen] = []
    try:
        if writes:
            for attempt in range(2):
                rabbit = spawn(["bash", str(BENCH / "cyborg_baseline" / "rabbitmq.sh"), str(rabbit_port),
                                str(work / f"rabbitmq{attempt}")], work / "rabbitmq.log")
                helpers.append(rabbit)
                try:
                    wait_port(rabbit_port, 120, rabbit)
                    break
                except RuntimeError:
                    stop_process(rabbit, 5)
                    if attempt:
                        raise RuntimeError("RabbitMQ did not start: " + (work / "rabbitmq.log").read_text()[-2000:])
            conductor = spawn([str(venv / "bin" / "cyborg-conductor"), "--config-file", conf],
                              work / "conductor.log", env=env, cwd=cdir)
            helpers.append(conductor)
        port = free_port()
        started = time.perf_counter()
        proc = spawn([str(venv / "bin" / "gunicorn"), "--workers", "2", "--threads", "4",
                      "--bind", f"127.0.0.1:{port}", "--chdir", str(BENCH / "cyborg_baseline"),
                      "--timeout", "120", "cyborg_wsgi:application"], log, env=env, cwd=cdir)
    except Exception:
        for h in helpers:
            stop_process(h, 5)
        raise
    dep = Deployment("cyborg", f"http://127.0.0.1:{port}/accelerator", proc, log)
    dep.helpers = helpers
    try:
        wait_200(dep.base_url + "/v2", 120, proc)
        dep.startup_s = time.perf_counter() - started
        if writes:
            wait_log(work / "conductor.log", "Created RPC server", 120)
    except Exception:
        dep.stop()
        raise
    time.sleep(2.0)
    return dep


def wait_log(path: Path, text: str, deadline_s: float) -> None:
    started = time.perf_counter()
    while time.perf_counter() - started < deadline_s:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{path} never said {text!r}")


def start_rayborg_full(work: Path, db_url: str, nova_url: str) -> Deployment:
    """`rayborg serve` with its Ray runtime (HostAgent, PlacementSync, binders): the write path."""
    port = free_port()
    cmd = [sys.executable, "-m", "rayborg", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--database-url", db_url, "--nova-url", nova_url]
    started = time.perf_counter()
    proc = spawn(cmd, work / "rayborg-full.log")
    dep = Deployment("rayborg+ray", f"http://127.0.0.1:{port}", proc, work / "rayborg-full.log")
    try:
        wait_200(dep.base_url + "/v2", 180, proc)
    except Exception:
        dep.stop()
        raise
    dep.startup_s = time.perf_counter() - started
    wait_actors_up(dep.base_url, 180, proc)  # serve answers before its actors are up: measure with them
    time.sleep(3.0)  # actors settle (first discovery sweep)
    return dep


def wait_actors_up(base_url: str, deadline_s: float, proc: subprocess.Popen) -> None:
    """Until GET /metrics says the Ray actors are up (`rayborg_actors_up 1`)."""
    started = time.perf_counter()
    while time.perf_counter() - started < deadline_s:
        if proc.poll() is not None:
            raise RuntimeError(f"rayborg serve exited with {proc.returncode} before its actors were up")
        try:
            with urllib.request.urlopen(base_url + "/metrics", timeout=5) as resp:
                if b"\nrayborg_actors_up 1.0\n" in resp.read():
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the actors of {base_url} were not up within {deadline_s} s")


def start_helper_services(work: Path) -> tuple[list, dict]:
    """A real Placement (tests/service_starters.py; Cyborg's conductor needs it at start) and the Nova
    stand-in (bench/nova_standin.py) that both deployments send bind events to."""
    stops = []
    nova_port = free_port()
    nova = spawn([sys.executable, str(BENCH / "nova_standin.py"), str(nova_port)], work / "nova.log")
    stops.append(lambda: stop_process(nova, 5))
    wait_port(nova_port, 30, nova)
    placement = Placement().start()
    stops.append(placement.stop)
    url = placement.url
    return stops, {"placement_url": url, "nova_url": f"http://127.0.0.1:{nova_port}/v2.1"}


def measure_writes(dep: Deployment, cycles: int, clients: int, duration: float, burst: int, nova_url: str) -> dict:
    idle = dep.pss()
    with PssSampler(dep) as sampler:
        out = subprocess.run([sys.executable, str(BENCH / "writes.py"), dep.base_url, "--cycles", str(cycles),
                              "--clients", str(clients), "--duration", str(duration), "--burst", str(burst),
                              "--nova", nova_url.removesuffix("/v2.1")],
                             capture_output=True, text=True, timeout=900)
    if out.returncode != 0:  # one deployment's failed write run must not lose the rest of the results
        print(f"  {dep.name}: writes.py failed (exit {out.returncode}):\n{out.stderr[-3000:]}", flush=True)
        return {"failed": f"writes.py exit {out.returncode}: {out.stderr.strip().splitlines()[-1:]}"}
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res.update(pss_idle_mib=idle, pss_load_mib=sampler.peak, processes=len(dep.pids()),
               startup_s=round(dep.startup_s, 2) if dep.startup_s else None)
    b, c = res["bind_sequential"], res["bind_concurrent"]
    print(f"  {dep.name:12s} profile create+delete p50 {res['profile_create_delete']['p50_ms']} ms; create->Bound "
          f"p50 {b['create_to_bound_p50_ms']} ms ({b['bound_cycles']}/{b['cycles']} bound, bind HTTP {b['bind_status']}); "
          f"{c['binds_per_s']} ARQs/s in cycles with {c['clients']} clients; burst "
          f"{res.get('bind_burst', {}).get('binds_per_s')} binds/s; PSS idle {idle} MiB", flush=True)
    return res


# ---------------------------------------------------------------- load

def load(url: str, clients: int, duration: float) -> dict:
    cmd = [sys.executable, str(BENCH / "loadgen.py"), url, "--clients", str(clients), "--duration", str(duration)]
    for k, v in dataset.HEADERS.items():
        cmd += ["--header", f"{k}:{v}"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=duration + 120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def warm(dep: Deployment) -> None:
    for _key, _label, path in ENDPOINTS:
        for _ in range(4):
            status = get_status(dep.base_url + path, dataset.HEADERS, timeout=60)
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
        out[dep.name] = {"pss_idle_mib": dep.front_pss(), "processes": len(process_tree(dep.proc.pid)),
                         "endpoints": {}}
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


# ---------------------------------------------------------------- report

def ratio(a, b) -> float | None:
    if a is None or b in (None, 0):
        return None
    return round(a / b, 2)


def build_rows(res: dict) -> list[dict]:
    rb, cy, fl = res["rayborg"], res.get("cyborg"), res["floor"]
    rows = []
    for key, label, _path in ENDPOINTS:
        r, f = rb["endpoints"][key], fl["endpoints"][key]
        c = cy["endpoints"][key] if cy else {}
        rq = ratio(r["req_s"], c.get("req_s"))
        rows.append({"metric": f"{label}: req/s", "rayborg": r["req_s"], "cyborg": c.get("req_s"),
                     "floor": f["req_s"], "ratio": rq, "target": f">= {READ_RATIO_TARGET:g}x Cyborg",
                     "met": None if rq is None else rq >= READ_RATIO_TARGET})
        rp = ratio(r["p99_ms"], c.get("p99_ms"))
        rows.append({"metric": f"{label}: p99 ms", "rayborg": r["p99_ms"], "cyborg": c.get("p99_ms"),
                     "floor": f["p99_ms"], "ratio": rp, "target": f"<= {P99_RATIO_TARGET:g}x Cyborg",
                     "met": None if rp is None else rp <= P99_RATIO_TARGET})
        rows.append({"metric": f"{label}: p50 ms", "rayborg": r["p50_ms"], "cyborg": c.get("p50_ms"),
                     "floor": f["p50_ms"], "ratio": ratio(r["p50_ms"], c.get("p50_ms")), "target": "", "met": None})
        rows.append({"metric": f"{label}: errors", "rayborg": r["errors"], "cyborg": c.get("errors"),
                     "floor": f["errors"], "ratio": None, "target": "0", "met": r["errors"] == 0})
        rf = ratio(r["req_s"], f["req_s"])
        rows.append({"metric": f"{label}: req/s rayborg/floor", "rayborg": r["req_s"], "cyborg": None,
                     "floor": f["req_s"], "ratio": rf, "target": f">= {FLOOR_RATIO_TARGETS[key]:g}x floor",
                     "met": None if rf is None else rf >= FLOOR_RATIO_TARGETS[key]})
    rows.append({"metric": "memory idle: PSS MiB, API server only (rayborg's front door; Cyborg gunicorn)", "rayborg": rb["pss_idle_mib"],
                 "cyborg": cy["pss_idle_mib"] if cy else None, "floor": fl["pss_idle_mib"],
                 "ratio": ratio(rb["pss_idle_mib"], cy["pss_idle_mib"] if cy else None),
                 "target": f"<= {IDLE_PSS_TARGET_MIB:g} MiB", "met": rb["pss_idle_mib"] <= IDLE_PSS_TARGET_MIB})
    rows.append({"metric": "memory under read load: peak PSS MiB, API server only", "rayborg": rb["pss_load_mib"],
                 "cyborg": cy["pss_load_mib"] if cy else None, "floor": fl["pss_load_mib"],
                 "ratio": ratio(rb["pss_load_mib"], cy["pss_load_mib"] if cy else None), "target": "", "met": None})
    rows += write_rows(res) + sync_rows(res.get("placement_sync"))
    st = res["rayborg_startup_s"]
    rows.append({"metric": "startup: `rayborg serve` to first 200 on /v2, s (median)",
                 "rayborg": round(statistics.median(st), 2), "cyborg": res.get("cyborg_startup_s"), "floor": None,
                 "ratio": ratio(statistics.median(st), res.get("cyborg_startup_s")), "target": "", "met": None})
    return rows


SYNC_ONE_CHANGE_MAX_CALLS = 10  # "O(1)": one changed device costs a handful of calls, whatever the cluster
SYNC_OWN_TIME_RATIO = 2.0       # the first sync's wall <= 2x the time Placement itself spent answering it
SYNC_LOST_EXTRA_CALLS = 4       # a lost host: a read and a write per device, and a few more


def sync_rows(sync: dict | None) -> list[dict]:
    """rayborg's Placement sync cost (bench/runtime_bench.placement_sync_cost); Cyborg has no column:
    its agents report through the conductor, which this run does not simulate for 200 hosts. The
    floor of the wall-time row is Placement's own answering time for the same calls (its access log)."""
    if not sync:
        return []
    size = f"{sync['hosts']} hosts x {sync['devices_per_host']} devices"
    first, same, one = sync["first_sync"], sync["unchanged_rereport"], sync["one_device_changed"]

    def row(metric, value, target="", met=None, floor=None):
        return {"metric": f"Placement sync: {metric}", "rayborg": value, "cyborg": None, "floor": floor,
                "ratio": ratio(value, floor), "target": target, "met": met}

    own = first.get("placement_own_seconds")
    bound = ratio(first["seconds"], own)
    rows = [row(f"first report of {size}: Placement calls", first["calls"]),
            row(f"first report of {size}: wall s (floor: Placement's own answering s)", first["seconds"],
                f"<= {SYNC_OWN_TIME_RATIO:g}x Placement's own", None if bound is None else bound <= SYNC_OWN_TIME_RATIO,
                own),
            row("unchanged re-report of every host: Placement writes", same["writes"], "0", same["writes"] == 0),
            row("unchanged re-report of every host: Placement calls", same["calls"], "0", same["calls"] == 0),
            row("one device added on one host: Placement calls", one["calls"],
                f"O(1): <= {SYNC_ONE_CHANGE_MAX_CALLS}", one["calls"] <= SYNC_ONE_CHANGE_MAX_CALLS)]
    lost = sync.get("host_lost")
    if lost:
        most = 2 * lost["devices"] + SYNC_LOST_EXTRA_CALLS
        rows += [row(f"one host lost ({lost['devices']} devices): Placement calls", lost["calls"],
                     f"O(devices): <= {most}", lost["calls"] <= most),
                 row("one host lost: its device providers reserved in Placement",
                     f"{lost['providers_reserved']} of {lost['providers']}", "all",
                     lost["providers"] > 0 and lost["providers_reserved"] == lost["providers"])]
    return rows


CREATE_TO_BOUND_TARGET_MS = 20.0
BINDS_PER_S_TARGET = 500.0
CYBORG_BURST = 20  # instances in Cyborg's bind burst: it binds about one ARQ per second


def write_rows(res: dict) -> list[dict]:
    w = res.get("writes") or {}
    r, c = w.get("rayborg"), w.get("cyborg")
    if not r and not c:
        return []

    def get(d, *path):
        for k in path:
            if d is None:
                return None
            d = d.get(k)
        return d

    def row(metric, path, target="", met=None):
        a, b = get(r, *path), get(c, *path)
        return {"metric": metric, "rayborg": a, "cyborg": b, "floor": None, "ratio": ratio(a, b), "target": target,
                "met": None if met is None or a is None else met(a)}

    return [
        row("write: device profile create+delete, p50 ms", ("profile_create_delete", "p50_ms")),
        row("write: create 2 ARQs (2-accelerator profile), p50 ms", ("bind_sequential", "arq_create_p50_ms")),
        row("write: create->Bound p50 ms (1 client, REST, polled)", ("bind_sequential", "create_to_bound_p50_ms"),
            f"<= {CREATE_TO_BOUND_TARGET_MS:g} ms", lambda v: v <= CREATE_TO_BOUND_TARGET_MS),
        row("write: create->Bound p99 ms (1 client)", ("bind_sequential", "create_to_bound_p99_ms")),
        {"metric": "write: bind PATCH answers (1 client)", "rayborg": fmt_codes(get(r, "bind_sequential", "bind_status")),
         "cyborg": fmt_codes(get(c, "bind_sequential", "bind_status")), "floor": None, "ratio": None,
         "target": "", "met": None},
        row("write: binds/s: ARQs bound per s, bind burst (one PATCH per instance, 50 clients, until Nova has "
            "every event)", ("bind_burst", "binds_per_s"),
            f">= {BINDS_PER_S_TARGET:g}/s", lambda v: v >= BINDS_PER_S_TARGET),
        row("write: bind burst: ARQs (instances x 2)", ("bind_burst", "arqs")),
        {"metric": "write: bind burst: ARQs not Bound at the end (state x count)",
         "rayborg": unbound(get(r, "bind_burst", "states")), "cyborg": unbound(get(c, "bind_burst", "states")),
         "floor": None, "ratio": None, "target": "none", "met": None if r is None else unbound(
             get(r, "bind_burst", "states")) == "none"},
        {"metric": "write: 5xx answers during the write runs", "rayborg": server_errors(r),
         "cyborg": server_errors(c), "floor": None, "ratio": None, "target": "0",
         "met": None if r is None else server_errors(r) == 0},
        row("write: bind burst: PATCH p50 ms", ("bind_burst", "patch_p50_ms")),
        row("write: bind burst: PATCH -> Nova event p50 ms", ("bind_burst", "bind_to_event_p50_ms")),
        row("write: bind burst: PATCH -> Nova event p99 ms", ("bind_burst", "bind_to_event_p99_ms")),
        row("write: ARQs bound/s in full REST cycles (create, bind, poll, unbind, delete), concurrent clients",
            ("bind_concurrent", "binds_per_s")),
        row("write: create->Bound p50 ms under concurrency", ("bind_concurrent", "create_to_bound_p50_ms")),
        row("memory idle: PSS MiB, whole deployment (rayborg: Ray+actors+API; Cyborg: API+conductor+RabbitMQ)",
            ("pss_idle_mib",), f"<= {IDLE_PSS_TARGET_MIB:g} MiB", lambda v: v <= IDLE_PSS_TARGET_MIB),
        row("memory under write load: peak PSS MiB, whole deployment", ("pss_load_mib",)),
        row("processes in the whole deployment", ("processes",)),
        row("startup s, whole deployment (rayborg serve with Ray; Cyborg API)", ("startup_s",)),
    ]


def unbound(states: dict | None) -> str | None:
    """The burst's ARQs in any state but Bound, e.g. "BindFailed x5, Initial x2"; "none" when none."""
    if states is None:
        return None
    return ", ".join(f"{k} x{v}" for k, v in sorted(states.items()) if k != "Bound") or "none"


def server_errors(w: dict | None) -> int | None:
    if not w or "status_codes" not in w:
        return None
    return sum(n for op, n in w["status_codes"].items() if op.rsplit(" ", 1)[-1].startswith("5"))


def fmt_codes(codes: dict | None) -> str | None:
    if not codes:
        return None
    return ", ".join(f"{k}x{v}" for k, v in sorted(codes.items()))


def fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)


def table(rows: list[dict]) -> list[list[str]]:
    head = ["metric", "rayborg", "Cyborg 17", "floor", "ratio", "target", "met?"]
    body = [[r["metric"], fmt(r["rayborg"]), fmt(r["cyborg"]), fmt(r["floor"]), fmt(r["ratio"]), r["target"],
             fmt(r["met"])] for r in rows]
    return [head] + body


def print_table(t: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in t) for i in range(len(t[0]))]
    for n, row in enumerate(t):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def markdown(res: dict, t: list[list[str]]) -> str:
    env = res["environment"]
    lines = ["# rayborg vs OpenStack Cyborg 17", "",
             (f"Run {res['started']} on {env['cpus']} CPUs ({env['machine']}), Python {env['python']}; "
              f"load average {env['loadavg_before']} before, {env['loadavg_after']} after. "
              f"{res['clients']} concurrent clients, {res['duration_s']} s per endpoint, one deployment at a time"
              + (f" (rayborg and the floor: {res['rounds']} rounds taking turns, the median round by req/s "
                 "shown; Cyborg: one)" if res.get("rounds", 1) > 1 else "") + "; "
              "the load generator (one aiohttp process) shares the same cores as the servers."), "",
             f"- rayborg: `rayborg serve --workers {res['rayborg_workers']}` on SQLite, its Ray actors running "
             "beside the front door.",
             (f"- Cyborg {res.get('cyborg_version', '-')}: API under gunicorn, 2 workers x 4 threads, SQLite "
              "(schema from its models), paste pipeline without auth_token, Keystone-like headers sent."),
             f"- floor: bare aiohttp + sqlite3 handlers, {res['rayborg_workers']} processes, same rows.",
             ("- Writes (`bench/writes.py`): rayborg is `rayborg serve` with its Ray runtime (binds through the "
              "binder actors); Cyborg adds RabbitMQ (Debian) and its conductor; both send bind events to a Nova "
              "stand-in (`bench/nova_standin.py`), Cyborg's conductor gets a real Placement. create->Bound is "
              "measured over REST as Nova would see it: POST the ARQs, PATCH the bind, poll until Bound. "
              "A bind cycle is create 2 ARQs, bind, poll, unbind, delete; 'ARQs bound/s' counts ARQs "
              "that reached Bound per second of such cycles from concurrent clients."),
             ("- A request counts as an error on a non-200 answer or after 30 s without one (client timeout); "
              "requests still open when the window closes are awaited and counted."),
             "- Memory is the PSS of each deployment's process tree (`/proc/<pid>/smaps_rollup`).",
             ("- Placement sync (`bench/runtime_bench.py`'s `placement_sync_cost`, rayborg only): simulated "
              "hosts on 3 Ray nodes (stand-in HostAgents, `bench/many_hosts.py`) report through Ray to a real "
              "PlacementSync, which pushes to a real Placement of its own (one gunicorn worker); Placement's "
              "access log counts the calls and its own answering time (the wall-time row's floor). First "
              "report, then every host again unchanged, then one host with one more device, then one host "
              "marked lost as the supervisor does when its node leaves, and a push."), "",
             "| " + " | ".join(t[0]) + " |", "|" + "|".join(["---"] + ["---:"] * (len(t[0]) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in t[1:]]
    if res.get("notes"):
        lines += ["", "Notes:", ""] + [f"- {n}" for n in res["notes"]]
    return "\n".join(lines) + "\n"


def plot(res: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install matplotlib): no plot", file=sys.stderr)
        return False
    names = [n for n in ("rayborg", "cyborg", "floor") if res.get(n)]
    labels = {"rayborg": "rayborg", "cyborg": f"Cyborg {res.get('cyborg_version', '')}", "floor": "floor"}
    keys = [k for k, _l, _p in ENDPOINTS]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / len(names)
    for ax, metric, title in ((axes[0], "req_s", "req/s (higher is better)"),
                              (axes[1], "p99_ms", "p99 latency, ms (lower is better)")):
        for i, n in enumerate(names):
            vals = [res[n]["endpoints"][k][metric] or 0 for k in keys]
            ax.bar([x + i * width for x in range(len(keys))], vals, width, label=labels[n])
        ax.set_xticks([x + width * (len(names) - 1) / 2 for x in range(len(keys))])
        ax.set_xticklabels([lbl for _k, lbl, _p in ENDPOINTS], rotation=15, fontsize=8)
        ax.set_yscale("log")
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"Reads, {res['clients']} clients x {res['duration_s']} s, {res['environment']['cpus']} CPUs")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def write_outputs(res: dict, out: Path) -> None:
    res["rows"] = build_rows(res)
    t = table(res["rows"])
    print()
    print_table(t)
    (out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    (out / "results.md").write_text(markdown(res, t))
    if plot(res, out / "reads.png"):
        print(f"\nwrote {out / 'results.json'}, results.md, reads.png ({res.get('total_s')} s)")


def measure_sync(hosts: int, work: Path) -> dict:
    """bench/runtime_bench.py's Placement sync cost: its own Placement and 3 Ray nodes."""
    from runtime_bench import placement_sync_cost

    print(f"Placement sync cost, {hosts} hosts x 8 devices on 3 Ray nodes ...", flush=True)
    sync = placement_sync_cost(hosts, 8, f"sqlite:///{work / 'sync.db'}", nodes=3)
    for phase in ("first_sync", "unchanged_rereport", "one_device_changed", "host_lost"):
        print(f"  {phase}: {sync[phase]}", flush=True)
    return sync


def main() -> int:
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
    ap.add_argument("--write-cycles", type=int, default=30,
                    help="sequential create->bind->unbind->delete cycles (and profile create+delete pairs)")
    ap.add_argument("--write-clients", type=int, default=10, help="concurrent clients for binds/s")
    ap.add_argument("--hosts", "--sync-hosts", dest="sync_hosts", type=int, default=200,
                    help="simulated hosts (8 devices each, on 3 Ray nodes) for the Placement sync cost; 0 skips it")
    ap.add_argument("--sync-only", action="store_true",
                    help="only the Placement sync cost: print its rows, write nothing")
    ap.add_argument("--burst", type=int, default=600, help="instances (2 ARQs each) in rayborg's bind burst")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--render-only", action="store_true",
                    help="re-render results.md and reads.png from OUT/results.json without measuring")
    args = ap.parse_args()
    if args.render_only:
        write_outputs(json.loads((args.out / "results.json").read_text()), args.out)
        return 0
    if args.sync_only:
        work = Path(tempfile.mkdtemp(prefix="rayborg-sync-"))
        try:
            print_table(table(sync_rows(measure_sync(args.sync_hosts, work))))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return 0
    args.duration = min(args.duration, 60.0)
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="rayborg-sxs-"))
    res: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "clients": args.clients,
                 "duration_s": args.duration, "rayborg_workers": args.rayborg_workers, "notes": [],
                 "environment": {"cpus": os.cpu_count(), "machine": platform.machine(),
                                 "python": platform.python_version(),
                                 "loadavg_before": " ".join(f"{x:.2f}" for x in os.getloadavg())}}
    deps: list[Deployment] = []
    helper_stops: list = []
    t0 = time.perf_counter()
    try:
        db = work / "rayborg.db"
        subprocess.run([sys.executable, str(BENCH / "seed_rayborg.py"), f"sqlite:///{db}"], check=True)
        floor_db = work / "floor.db"
        shutil.copy(db, floor_db)

        print("starting rayborg ...", flush=True)
        rb, startup = start_rayborg(work, f"sqlite:///{db}", args.rayborg_workers, args.startup_runs)
        deps.append(rb)
        res["rayborg_startup_s"] = [round(s, 3) for s in startup]
        print(f"  rayborg serve -> first 200 on /v2: {', '.join(f'{s:.2f}' for s in startup)} s", flush=True)
        print("starting the floor ...", flush=True)
        fl = start_floor(work, floor_db, args.rayborg_workers)
        deps.append(fl)
        print(f"reads: rayborg and the floor taking turns, {args.rounds} round(s) ...", flush=True)
        both = measure([rb, fl], args.clients, args.duration, args.rounds)
        res["rayborg"], res["floor"], res["rounds"] = both[rb.name], both[fl.name], args.rounds
        rb.stop()
        fl.stop()

        venv = version = None
        if not args.skip_cyborg:
            print("preparing Cyborg 17's virtualenv (installed on first use) ...", flush=True)
            venv, version = cyborg_venv()
            res["cyborg_version"] = version
        writes = None
        if not args.reads_only:
            if args.skip_cyborg or Path("/usr/lib/rabbitmq/bin/rabbitmq-server").exists():
                print("starting Placement and the Nova stand-in for writes ...", flush=True)
                stops, writes = start_helper_services(work)
                helper_stops.extend(stops)
            else:
                res["notes"].append("Writes skipped: rabbitmq-server is not installed (apt-get install "
                                    "rabbitmq-server); Cyborg's writes need its conductor over RabbitMQ.")
        res["writes"] = {}
        if venv is not None:
            print("starting Cyborg 17" + (" (API, conductor, RabbitMQ)" if writes else " (API)") + " ...", flush=True)
            cy = start_cyborg(work, venv, writes)
            deps.append(cy)
            res["cyborg_startup_s"] = round(cy.startup_s, 2)
            res["cyborg"] = measure([cy], args.clients, args.duration)[cy.name]
            if writes:
                res["writes"]["cyborg"] = measure_writes(cy, args.write_cycles, args.write_clients, args.duration,
                                                         CYBORG_BURST, writes["nova_url"])
            cy.stop()
            res["notes"].append("Cyborg startup: gunicorn start to first 200 on /accelerator/v2 (one run; with "
                                "writes, RabbitMQ and the conductor were started before it).")
        else:
            res["notes"].append("Cyborg skipped (--skip-cyborg): ratios against it are empty.")
        if writes:
            print("starting rayborg with its Ray runtime for writes ...", flush=True)
            wdb = work / "rayborg-writes.db"
            shutil.copy(floor_db, wdb)
            rf = start_rayborg_full(work, f"sqlite:///{wdb}", writes["nova_url"])
            deps.append(rf)
            res["writes"]["rayborg"] = measure_writes(rf, args.write_cycles, args.write_clients, args.duration,
                                                      args.burst, writes["nova_url"])
            rf.stop()
            if args.sync_hosts > 0:
                res["placement_sync"] = measure_sync(args.sync_hosts, work)
    finally:
        for d in deps:
            d.stop()
        for stop in helper_stops:
            stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work directory kept: {work}")
    for name, w in res.get("writes", {}).items():
        if w.get("failed"):
            res["notes"].append(f"{name}'s write benchmark failed, its write rows are empty: {w['failed']}")
    res["environment"]["loadavg_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    res["total_s"] = round(time.perf_counter() - t0, 1)
    # Only the load before the run tells of other work: during and after it, the load is the run's own.
    before = float(res["environment"]["loadavg_before"].split()[0])
    if before > (os.cpu_count() or 1) / 2:
        res["notes"].append(f"The machine was busy when this run started (1-minute load average {before:.2f} on "
                            f"{os.cpu_count()} CPUs: other work shared these cores), so absolute figures are low "
                            "and noisy; the ratios, measured in the same run, are what to compare.")
    write_outputs(res, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Process control for bench/run.py: starting and stopping what it measures, each in its own session
on a free 127.0.0.1 port: `rayborg serve` (reads; writes with its Ray runtime, optionally with a
config file), OpenStack Cyborg 17 (API, RabbitMQ, conductor), the floor (bench/floor.py), a real
Placement and the Nova stand-in, and a throwaway PostgreSQL (bench/postgres.py). Nothing here measures.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(1, str(REPO / "tests"))
import dataset  # noqa: E402


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


def wait_log(path: Path, text: str, deadline_s: float) -> None:
    started = time.perf_counter()
    while time.perf_counter() - started < deadline_s:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{path} never said {text!r}")


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


# ---------------------------------------------------------------- processes

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


class Deployment:
    """One deployment: its front process plus any helpers (conductor, RabbitMQ), each in its own session."""

    def __init__(self, name: str, base_url: str, proc: subprocess.Popen, log: Path):
        self.name, self.base_url, self.proc, self.log = name, base_url, proc, log
        self.helpers: list[subprocess.Popen] = []
        self.startup_s: float | None = None

    def pids(self) -> list[int]:
        """Every process of the whole deployment."""
        return [p for proc in [self.proc, *self.helpers] for p in process_tree(proc.pid)]

    def front_pids(self) -> list[int]:
        """The API server alone (rayborg's front door, Cyborg's gunicorn master + workers)."""
        return process_tree(self.proc.pid)

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


# ---------------------------------------------------------------- rayborg

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


def write_config(path: Path, text: str) -> Path:
    """A `rayborg serve --config` file (TOML), e.g. `[quota]\\ndefault = 1000000\\n`."""
    path.write_text(text)
    return path


def start_rayborg_full(work: Path, db_url: str, nova_url: str, name: str = "rayborg+ray",
                       config: Path | None = None, settle_s: float = 3.0) -> Deployment:
    """`rayborg serve` with its Ray runtime (HostAgent, PlacementSync, binders): the write path.
    `config`: a settings file passed as `--config` (an empty one otherwise, so that no
    $RAYBORG_CONFIG or default file of the machine's user changes what is measured)."""
    port = free_port()
    log = work / f"{name.replace('+', '-').replace(' ', '-')}.log"
    if config is None:
        config = write_config(work / "empty.toml", "")
    cmd = [sys.executable, "-m", "rayborg", "serve", "--config", str(config), "--host", "127.0.0.1",
           "--port", str(port), "--database-url", db_url, "--nova-url", nova_url]
    started = time.perf_counter()
    proc = spawn(cmd, log)
    dep = Deployment(name, f"http://127.0.0.1:{port}", proc, log)
    try:
        wait_200(dep.base_url + "/v2", 180, proc)
        dep.startup_s = time.perf_counter() - started
        wait_actors_up(dep.base_url, 180, proc)  # serve answers before its actors are up: measure with them
    except Exception:
        dep.stop()
        raise
    time.sleep(settle_s)  # actors settle (first discovery sweep)
    return dep


def seed_rayborg(db_url: str) -> None:
    subprocess.run([sys.executable, str(BENCH / "seed_rayborg.py"), db_url], check=True)


# ---------------------------------------------------------------- the floor, Cyborg, helpers

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


def rabbitmq_installed() -> bool:
    return Path("/usr/lib/rabbitmq/bin/rabbitmq-server").exists()


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


def start_helper_services(work: Path, placement: bool = True) -> tuple[list, dict]:
    """A real Placement (tests/service_starters.py; Cyborg's conductor needs it at start; not with
    `placement=False`) and the Nova stand-in (bench/nova_standin.py) that the deployments send bind
    events to. Returns the stops to call and {"placement_url", "nova_url"}."""
    stops = []
    nova_port = free_port()
    nova = spawn([sys.executable, str(BENCH / "nova_standin.py"), str(nova_port)], work / "nova.log")
    stops.append(lambda: stop_process(nova, 5))
    wait_port(nova_port, 30, nova)
    urls = {"placement_url": None, "nova_url": f"http://127.0.0.1:{nova_port}/v2.1"}
    if placement:
        from service_starters import Placement

        try:
            started = Placement().start()
        except Exception:
            for stop in stops:
                stop()
            raise
        stops.append(started.stop)
        urls["placement_url"] = started.url
    return stops, urls

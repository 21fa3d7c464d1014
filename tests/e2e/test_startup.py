"""`rayborg serve` answers before Ray and its actors are up: reads at once, writes that need the actors
queued until they are (never lost); `rayborg status` says the actors are starting; the local Ray head
runs only the processes rayborg uses, and the dashboard and `ray list actors` still show the actors."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from factories import nova_bind_ops
from serve_process import ServeProcess
from waiting import wait_for

from rayborg.actors.runtime_config import RuntimeConfig
from rayborg.drivers.registry import discover_host
from rayborg.actor_runtime import Pending
from rayborg.store import daemon_lease
from rayborg.store.engine import Store
from rayborg.store.host_reports import apply_report
from rayborg.store.migrate import upgrade

RAY = Path(sys.executable).with_name("ray")


def call(method: str, url: str, body=None):
    import urllib.error
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
            is_json = resp.headers.get_content_type() == "application/json"
            return resp.status, json.loads(raw) if raw and is_json else raw
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def seed_devices(database_url: str, hostname: str, fake: str) -> None:
    """The devices this host's agent will report, in the store before serve starts (as a restarted
    daemon finds them), so that a bind can be made before the actors are up."""
    upgrade(database_url)
    store = Store(database_url)
    try:
        report = discover_host(hostname, **RuntimeConfig(database_url, fake_devices=fake).for_host(hostname))
        store.transact(apply_report, report)
    finally:
        store.dispose()


def processes_of(pid: int) -> list[str]:
    """The command lines of `pid`'s descendants."""
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            kids.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    out, todo = [], list(kids.get(pid, []))
    while todo:
        child = todo.pop()
        todo.extend(kids.get(child, []))
        try:
            out.append(Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            pass
    return out


@pytest.mark.xdist_group("ray")
@pytest.mark.slow
def test_serve_answers_before_the_actors_and_a_bind_made_meanwhile_ends_bound(tmp_path):
    host = socket.gethostname()
    server = ServeProcess(tmp_path, "--fake-devices", "fpga:1")
    seed_devices(server.database_url, host, "fpga:1")
    started = time.monotonic()
    server.start()
    first_answer = time.monotonic() - started
    try:
        log = server.log.read_text()
        assert "actors starting" in log and "actors up" not in log, log[-2000:]
        assert daemon_lease.find(server.database_url).ray_address == daemon_lease.RAY_STARTING
        api = f"{server.url}/v2"
        # Reads, /metrics and the writes that need only the store: answered while the actors start.
        assert call("GET", f"{api}/device_profiles") == (200, {"device_profiles": []})
        status, text = call("GET", f"{server.url}/metrics")
        assert status == 200 and b"\nrayborg_actors_up 0.0\n" in text
        dep = call("GET", f"{api}/deployables")[1]["deployables"][0]
        profile = [{"name": "early", "groups": [{"resources:FPGA": "1"}]}]
        assert call("POST", f"{api}/device_profiles", profile)[0] == 201
        status, body = call("POST", f"{api}/accelerator_requests", {"device_profile_name": "early"})
        arq = body["arqs"][0]["uuid"]
        instance = str(uuid.uuid4())
        status, _ = call("PATCH", f"{api}/accelerator_requests", {arq: nova_bind_ops(host, dep["rp_uuid"], instance)})
        assert status == 202
        assert "actors up" not in server.log.read_text(), "the actors came up before the bind: nothing tested"
        bound = wait_for(lambda: (lambda a: a if a["state"] in ("Bound", "BindFailed") else None)(
            call("GET", f"{api}/accelerator_requests/{arq}")[1]), what="the early bind")
        assert bound["state"] == "Bound" and bound["instance_uuid"] == instance
        # The binder's resume at its start may have bound it already; the queued hand-off goes on anyway.
        log = wait_for(lambda: (lambda t: t if "actors up" in t else None)(server.log.read_text()),
                       what="actors up")
        assert "1 bind hand-offs made while the actors started: passed on" in log
        daemon = daemon_lease.find(server.database_url)
        assert daemon.ray_address not in (None, daemon_lease.RAY_STARTING)

        # The actors' metrics are still relayed from Ray's per-node agent (PlacementSync applied a report).
        text = wait_for(lambda: (lambda t: t if b"rayborg_report_apply_seconds_count" in t else None)(
            call("GET", f"{server.url}/metrics")[1]), what="the actors' metrics on /metrics")
        assert b"\nrayborg_actors_up 1.0\n" in text

        # Only the Ray processes rayborg uses (rayborg/ray_head.py) ...
        procs = processes_of(server.proc.pid)
        # The dashboard runs in serve's own process (a thread), its NodeHead and StateHead modules too:
        # no dashboard process, no module processes, no forkserver (multiprocessing's forkserver and
        # its resource tracker).
        assert not [p for p in procs if p.startswith("ray-dashboard-") or "forkserver" in p
                    or "resource_tracker" in p], procs
        assert not [p for p in procs if " -m rayborg.ray_head --host=" in p or "dashboard/dashboard.py --" in p]
        assert not [p for p in procs if "autoscaler/_private/monitor.py" in p or "log_monitor.py" in p]
        # Ray's runtime-env agent waits behind a stand-in until a worker needs a runtime_env.
        assert not [p for p in procs if p.startswith("ray::RuntimeEnvAgent")], procs
        assert len([p for p in procs if "-m rayborg.ray_head --lazy-runtime-env-agent " in p
                    and Path(p.split()[0]).name.startswith("python")]) == 1, procs
        # ... and still every actor by name in the dashboard's Actors page and `ray list actors`.
        names = {f"rayborg:host:{host}", "rayborg:placement-sync", "rayborg:binder:0"}

        def alive_on_the_actors_page() -> set[str]:
            status, page = call("GET", f"{daemon.dashboard_url}/logical/actors")
            assert status == 200
            return {a.get("name") for a in page["data"]["actors"].values() if a.get("state") == "ALIVE"}

        wait_for(lambda: names <= alive_on_the_actors_page(), what="every actor ALIVE on the Actors page")
        out = subprocess.run([str(RAY), "list", "actors", "--address", daemon.ray_address, "--format", "json",
                              "--filter", "state=ALIVE"], capture_output=True, text=True, timeout=120,
                             env={k: v for k, v in server.env.items() if k != "RAY_ADDRESS"})
        assert out.returncode == 0, out.stderr[-2000:]
        assert names <= {a["name"] for a in json.loads(out.stdout)}
        # A task with a runtime_env still runs: the stand-in hands its port to Ray's agent at the first call.
        task = ("import os, ray; ray.init(address=os.environ['GCS']); "
                "f = ray.remote(lambda: os.environ.get('LAZY_AGENT_PROBE')); "
                "print(ray.get(f.options(runtime_env={'env_vars': {'LAZY_AGENT_PROBE': 'yes'}}).remote(), "
                "timeout=90))")
        env = {k: v for k, v in server.env.items() if k != "RAY_ADDRESS"}
        out = subprocess.run([sys.executable, "-c", task], capture_output=True, text=True, timeout=150,
                             env={**env, "GCS": daemon.ray_address})
        assert out.returncode == 0 and out.stdout.strip().endswith("yes"), (out.stdout + out.stderr)[-3000:]
        assert len([p for p in processes_of(server.proc.pid) if p.startswith("ray::RuntimeEnvAgent")]) == 1
    finally:
        assert server.stop() == 0, server.log.read_text()[-3000:]
    print(f"first 200 on /v2 {first_answer:.2f} s after the process started")


def test_rayborg_status_says_the_actors_are_starting(tmp_path):
    url = f"sqlite:///{tmp_path / 'starting.db'}"
    upgrade(url)
    store = Store(url)
    lease = daemon_lease.acquire(store, api_host="127.0.0.1", api_port=1, database_url=url)
    try:
        lease.update(ray_address=daemon_lease.RAY_STARTING)
        (tmp_path / "none.toml").touch()
        env = dict(os.environ, RAYBORG_CONFIG=str(tmp_path / "none.toml"))
        out = subprocess.run([sys.executable, "-m", "rayborg", "status", "--database-url", url], env=env,
                             capture_output=True, text=True, timeout=60)
    finally:
        lease.release()
        store.dispose()
    assert out.returncode == 1
    assert "is starting its actors: try again in a few seconds" in out.stderr
    assert "Ray starting" in out.stderr and "--no-actors" not in out.stderr


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.closed = False

    async def submit(self, *args) -> None:
        self.calls.append(("submit", *args))

    async def released(self, *args) -> None:
        self.calls.append(("released", *args))

    async def drain(self) -> None:
        self.calls.append(("drain",))

    async def close(self) -> None:
        self.closed = True


def test_pending_queues_hand_offs_in_order_until_attached():
    async def scenario() -> tuple[list, list, bool]:
        pending, binder = Pending("bind"), Recorder()
        await pending.submit(["a"], {"a": "i1"})
        await pending.released("held")
        await pending.submit(["b"], None)
        await pending.drain()  # nothing to wait for yet
        before = list(binder.calls)
        await pending.attach(binder)
        await pending.submit(["c"], None)
        await pending.close()
        return before, binder.calls, binder.closed

    before, calls, closed = asyncio.run(scenario())
    assert before == []
    assert calls == [("submit", ["a"], {"a": "i1"}), ("released", "held"), ("submit", ["b"], None),
                     ("submit", ["c"], None)]
    assert closed


def test_the_actors_metrics_module_does_not_import_prometheus_client():
    """The actors record through Ray; prometheus_client (the front doors' recorder) is imported only
    where it records (about 1 MiB in each actor process otherwise)."""
    code = ("import sys; import rayborg.actors.metrics as m; "
            "assert 'prometheus_client' not in sys.modules, 'imported at module level'; "
            "m.bind_finished('Bound', 0.01); assert 'prometheus_client' in sys.modules; "
            "print([f.name for f in m.collect()])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "rayborg_binds" in out.stdout


def test_the_actors_modules_do_not_import_keystoneauth1():
    """keystoneauth1 (~3 MiB in each actor process) is imported by the Placement and Nova clients only
    once one is made: not in a Binder or PlacementSync of a deployment without Placement, Nova or
    Keystone."""
    code = ("import sys; import rayborg.actors.binder, rayborg.actors.placement_sync, "
            "rayborg.actors.host_agent, rayborg.actors.placement_push, rayborg.actors.nova_notifier; "
            "assert not [m for m in sys.modules if m.startswith('keystoneauth1')], 'imported early'; "
            "from rayborg.actors.placement_client import PlacementClient; "
            "PlacementClient('http://127.0.0.1:9'); "
            "assert 'keystoneauth1.adapter' in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"

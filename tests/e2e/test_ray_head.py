"""rayborg/ray_head.py without a Ray cluster: what the local head's dashboard imports and the command
lines it rewrites (the processes themselves: tests/e2e/test_startup.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from rayborg.ray_head import LAZY_AGENT, _in_this_process, _lazy_agent_command


def test_the_dashboard_imports_only_the_modules_it_loads():
    code = ("import json, sys; from rayborg.ray_head import import_only; "
            "import_only({'NodeHead', 'StateHead'}); from ray.dashboard import utils; "
            "from ray.dashboard.subprocesses.module import SubprocessModule; "
            "print(json.dumps([sorted(c.__name__ for c in utils.get_all_modules(SubprocessModule)), "
            "[c.__name__ for c in utils.get_all_modules(utils.DashboardHeadModule)], "
            "sorted(m for m in sys.modules if m.startswith('ray.dashboard.modules.') "
            "and m.endswith('_head'))]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    subprocess_modules, head_modules, imported_heads = json.loads(out.stdout)
    assert subprocess_modules == ["NodeHead", "StateHead"] and head_modules == []
    # Ray's own way imports every head module (job, serve, data, train, metrics, ...).
    assert imported_heads == ["ray.dashboard.modules.node.node_head",
                              "ray.dashboard.modules.state.state_head"]


def test_command_lines():
    dashboard = ["/py", "/ray/dashboard/dashboard.py", "--host=127.0.0.1", "--modules-to-load=NodeHead"]
    assert _in_this_process(dashboard) == ["/py", "-m", "rayborg.ray_head", "--host=127.0.0.1",
                                           "--modules-to-load=NodeHead"]
    raylet = ["/ray/raylet", "--x=1",
              "--runtime_env_agent_command=/py -u /ray/_private/runtime_env/agent/main.py --node-id=n"]
    assert _lazy_agent_command(raylet) == [
        "/ray/raylet", "--x=1", f"--runtime_env_agent_command=/py -u -m rayborg.ray_head {LAZY_AGENT} "
        "/ray/_private/runtime_env/agent/main.py --node-id=n"]


def test_dashboard_options_and_where_its_command_line_names_the_script():
    from rayborg.ray_head import _dashboard_options, _script_at

    assert _script_at(["/py", "/ray/dashboard/dashboard.py", "--host=h"]) == 1
    assert _script_at(["/py", "-m", "rayborg.ray_head", "--host=h"]) == 2
    assert _script_at(["/py", "other.py"]) is None
    opts = _dashboard_options(["--host=127.0.0.1", "--port=8265", "--minimal", "--proxy-server-url="])
    assert (opts["host"], opts["port"], opts["minimal"], opts["proxy-server-url"]) == ("127.0.0.1", "8265", True, "")
    assert opts["logging-filename"] == "dashboard.log" and opts["port-retries"] == "0"


# A local head started under trimmed_head, in a process of its own: where the dashboard runs, and that
# it still shows a named actor on its Actors page (the whole daemon: tests/e2e/test_startup.py).
HEAD = """
import json, os, sys, urllib.request
import ray
from rayborg.ray_head import trimmed_head
os.environ.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
with trimmed_head("NodeHead,StateHead", False, False, dashboard_in_process=sys.argv[1] == "thread"):
    ctx = ray.init(address="local", include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=0, num_cpus=1,
                   object_store_memory=80 * 1024**2, namespace="t", log_to_driver=False)

@ray.remote
class Named:
    def ping(self):
        return 1

a = Named.options(name="named-one").remote()
ray.get(a.ping.remote(), timeout=60)
kids = []
for pid in os.listdir("/proc"):
    try:
        stat = open(f"/proc/{pid}/stat").read()
        if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid():
            kids.append(open(f"/proc/{pid}/cmdline").read().replace("\\0", " "))
    except (OSError, ValueError):
        pass
url = ctx.dashboard_url if "://" in ctx.dashboard_url else "http://" + ctx.dashboard_url
import time
for _ in range(60):
    page = json.load(urllib.request.urlopen(url + "/logical/actors", timeout=30))
    names = [x.get("name") for x in page["data"]["actors"].values()]
    if "named-one" in names:
        break
    time.sleep(1)
print(json.dumps({"names": names, "kids": kids}))
ray.shutdown()
"""


@pytest.mark.xdist_group("ray")
@pytest.mark.slow
@pytest.mark.parametrize("where", ["thread", "process"])
def test_the_dashboard_runs_in_a_thread_of_the_head_process_or_in_its_own(where):
    out = subprocess.run([sys.executable, "-c", HEAD, where], capture_output=True, text=True, timeout=300,
                         env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert "named-one" in seen["names"]
    dashboards = [k for k in seen["kids"] if " -m rayborg.ray_head --host=" in k]
    assert len(dashboards) == (1 if where == "process" else 0), seen["kids"]
    assert not [k for k in seen["kids"] if "forkserver" in k or k.startswith("ray-dashboard-")], seen["kids"]


def test_the_dashboard_agent_runs_only_the_modules_rayborg_uses():
    from rayborg.ray_head import AGENT_MODULES, _trimmed_agent_command, agent_modules

    assert agent_modules("NodeHead,StateHead") == ["ReporterAgent", "HealthzAgent", "LogAgent", "LogAgentV1Grpc"]
    assert agent_modules("NodeHead,StateHead,JobHead")[-1] == "JobAgent"  # `ray job` needs its agent too
    raylet = ["/ray/raylet", "--dashboard_agent_command=/py -u /ray/dashboard/agent.py --node-id=n"]
    assert _trimmed_agent_command(raylet, ["ReporterAgent", "LogAgent"]) == [
        "/ray/raylet", f"--dashboard_agent_command=/py -u -m rayborg.ray_head {AGENT_MODULES}ReporterAgent,LogAgent "
        "/ray/dashboard/agent.py --node-id=n"]
    # What the agent then loads: those modules, and nothing of Ray's other agent modules is imported.
    code = ("import json, sys; from ray.dashboard import utils; import rayborg.ray_head as h; "
            "import runpy; runpy.run_path = lambda *a, **k: None; sys.argv = ['x', 'y', 'z']; "
            "h._run_agent({'ReporterAgent', 'LogAgent'}, 'agent.py'); "
            "print(json.dumps([sorted(c.__name__ for c in utils.get_all_modules(utils.DashboardAgentModule)), "
            "sorted(m for m in sys.modules if m.startswith('ray.dashboard.modules.') and m.endswith('_agent'))]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded, imported = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == ["LogAgent", "ReporterAgent"]
    assert imported == ["ray.dashboard.modules.log.log_agent", "ray.dashboard.modules.reporter.reporter_agent"]


def test_the_gcs_and_the_raylet_get_the_jemalloc_conf_unless_the_environment_has_one(monkeypatch):
    from ray._private import ray_constants, services

    from rayborg.ray_head import JEMALLOC_CONF, trimmed_head
    from rayborg.settings import Settings

    seen = []
    monkeypatch.setattr(services, "start_ray_process", lambda command, kind, *a, **kw: seen.append((kind, kw)))
    monkeypatch.delenv("MALLOC_CONF", raising=False)
    with trimmed_head("NodeHead", False, False, lazy_runtime_env_agent=False, jemalloc_conf=JEMALLOC_CONF):
        for kind in (ray_constants.PROCESS_TYPE_GCS_SERVER, ray_constants.PROCESS_TYPE_RAYLET,
                     ray_constants.PROCESS_TYPE_LOG_MONITOR):
            services.start_ray_process(["x"], kind, fate_share=False)
        monkeypatch.setenv("MALLOC_CONF", "narenas:4")
        services.start_ray_process(["x"], ray_constants.PROCESS_TYPE_GCS_SERVER, fate_share=False)
    assert [kw.get("env_updates") for _, kw in seen] == [{"MALLOC_CONF": JEMALLOC_CONF}] * 2 + [None, None]
    assert Settings().ray_jemalloc_conf == JEMALLOC_CONF
    monkeypatch.setenv("RAYBORG_RAY_JEMALLOC_CONF", "")  # Ray's own default
    assert Settings().ray_jemalloc_conf == ""


def test_only_the_dashboard_with_rayborgs_modules_runs_in_this_process(monkeypatch):
    from ray._private import ray_constants, services

    import rayborg.ray_head as ray_head

    seen = []
    monkeypatch.setattr(services, "start_ray_process", lambda command, kind, *a, **kw: seen.append(command))
    monkeypatch.setattr(ray_head, "DashboardThread", lambda command: ("thread", command))
    dash = ray_constants.PROCESS_TYPE_DASHBOARD
    ours = ["/py", "/ray/dashboard/dashboard.py", "--host=127.0.0.1"]
    off = [*ours, "--modules-to-load=UsageStatsHead", "--disable-frontend"]  # Ray's, with the dashboard off
    with ray_head.trimmed_head("NodeHead,StateHead", False, False, dashboard_in_process=True):
        assert services.start_ray_process(ours, dash, fate_share=False).process == ("thread", [
            "/py", "-m", "rayborg.ray_head", "--host=127.0.0.1", "--modules-to-load=NodeHead,StateHead"])
        services.start_ray_process(off, dash, fate_share=False)
    with ray_head.trimmed_head("NodeHead,StateHead", False, False, dashboard_in_process=False):
        services.start_ray_process(ours, dash, fate_share=False)
    with ray_head.trimmed_head("all", False, False, dashboard_in_process=True):
        services.start_ray_process(ours, dash, fate_share=False)
    assert seen == [off, ["/py", "-m", "rayborg.ray_head", "--host=127.0.0.1", "--modules-to-load=NodeHead,StateHead"],
                    ours]

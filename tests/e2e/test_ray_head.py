"""rayborg/ray_head.py without a Ray cluster: what the local head's dashboard imports and the command
lines it rewrites (the processes themselves: tests/e2e/test_startup.py)."""

from __future__ import annotations

import json
import subprocess
import sys

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

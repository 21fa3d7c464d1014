"""Which of Ray's own processes a local head (`ray.init()` starting Ray in `rayborg serve`) runs.

A default Ray head on one box is about 20 processes, most of them for Ray features rayborg does not
use: the autoscaler monitor (nothing to scale on one box), the log monitor (it streams workers' logs to
drivers, and serve runs with log_to_driver=False) and ten dashboard modules, one process each, of
which the Actors page and `ray list actors` need two: NodeHead (/logical/actors, the nodes) and
StateHead (the state API, /api/v0/...). Measured with bench/memory_breakdown.py: ~20 MiB PSS per
module process, ~50 MiB per monitor.

`ray.init` takes no option for any of these, so `trimmed_head` adjusts the two places where it
decides, for the duration of one `ray.init` call: the head's RayParams (no_monitor,
include_log_monitor) and the dashboard's command line (`--modules-to-load`, which Ray itself uses
when the dashboard is off). ray is pinned (pyproject.toml); tests/e2e/test_startup.py checks the
processes and that the dashboard and `ray list actors` still show the actors.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

ALL_MODULES = "all"
# The dashboard modules the Actors page and `ray list actors` need.
DEFAULT_DASHBOARD_MODULES = "NodeHead,StateHead"


@contextmanager
def trimmed_head(dashboard_modules: str, autoscaler_monitor: bool, log_monitor: bool) -> Iterator[None]:
    """Within this block, a Ray head started by `ray.init` runs only the processes asked for."""
    from ray._private import node, ray_constants, services

    modules = ",".join(m.strip() for m in dashboard_modules.split(",") if m.strip())
    original_init, original_start = node.Node.__init__, services.start_ray_process

    def init(self, ray_params, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("head"):
            ray_params.no_monitor = not autoscaler_monitor
            ray_params.include_log_monitor = log_monitor
        original_init(self, ray_params, *args, **kwargs)

    def start(command: list[str], process_type: str, *args: Any, **kwargs: Any):
        if (process_type == ray_constants.PROCESS_TYPE_DASHBOARD and modules != ALL_MODULES
                and not any(arg.startswith("--modules-to-load") for arg in command)):
            command = [*command, f"--modules-to-load={modules}"]
        return original_start(command, process_type, *args, **kwargs)

    node.Node.__init__, services.start_ray_process = init, start
    try:
        yield
    finally:
        node.Node.__init__, services.start_ray_process = original_init, original_start

"""Which of Ray's own processes a local head (`ray.init()` starting Ray in `rayborg serve`) runs.

A default Ray head on one box is about 20 processes, most of them for Ray features rayborg does not
use: the autoscaler monitor (nothing to scale on one box), the log monitor (it streams workers' logs to
drivers, and serve runs with log_to_driver=False) and ten dashboard modules, one process each, of
which the Actors page and `ray list actors` need two: NodeHead (/logical/actors, the nodes) and
StateHead (the state API, /api/v0/...). Measured with bench/memory_breakdown.py: ~20 MiB PSS per
module process, ~50 MiB per monitor.

Ray runs each dashboard module of the newer kind (`SubprocessModule`: NodeHead, StateHead, ...) in a
process of its own, forked from a forkserver (itself two processes), and proxies the dashboard's
requests to it over a Unix socket: with two modules, five processes and ~115 MiB PSS. With a list of
modules (not "all"), the dashboard here runs them in its own process and event loop instead
(`python -m rayborg.ray_head` is Ray's dashboard.py with `modules_in_this_process` applied): the
module still serves its Unix socket and the dashboard still proxies to it, only from the same
process; no forkserver, no module processes (~95 MiB less, bench/memory_breakdown.py).

Ray's runtime-env agent (~50 MiB, one per node, started by the raylet) is needed only by workers with
a runtime_env (rayborg's actors have none; `ray job`, a user's task with `env_vars` or `pip` do). The
raylet here starts `python -m rayborg.ray_head --lazy-runtime-env-agent` instead (~5 MiB): it binds
the agent's port and records it as the agent would, and on the first connection runs Ray's agent
in its place (exec, the same pid) on that port; the raylet retries the calls refused meanwhile
(`lazy_runtime_env_agent`).

The dashboard itself (with a list of modules) runs in a thread of the process that starts the head
(`rayborg serve`, which has Ray's core imported already) instead of a process of its own
(`DashboardThread`, ~70 MiB PSS less; `ray_dashboard_process = true` gives it its process back), and
Ray's dashboard agent (one per node, started by the raylet) loads only the modules rayborg's head
needs (`agent_modules`: the metrics export the front door's /metrics relays, logs, health; ~5 MiB).
The GCS and the raylet get a MALLOC_CONF for the jemalloc Ray preloads into them (`JEMALLOC_CONF`,
~10 MiB).

`ray.init` takes no option for any of these, so `trimmed_head` adjusts the places where it
decides, for the duration of one `ray.init` call: the head's RayParams (no_monitor,
include_log_monitor), the dashboard's command line (`--modules-to-load`, which Ray itself uses
when the dashboard is off, and this module in place of dashboard.py, or no process at all), the
raylet's (`--runtime_env_agent_command`, `--dashboard_agent_command`), the GCS's and the raylet's
environment, and the order: the dashboard starts after the raylet. ray is pinned (pyproject.toml); tests/e2e/test_startup.py checks the
processes and that the dashboard and `ray list actors` still show the actors.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

ALL_MODULES = "all"
# The dashboard modules the Actors page and `ray list actors` need.
DEFAULT_DASHBOARD_MODULES = "NodeHead,StateHead"


@contextmanager
def trimmed_head(dashboard_modules: str, autoscaler_monitor: bool, log_monitor: bool,
                 lazy_runtime_env_agent: bool = True, dashboard_in_process: bool = False,
                 jemalloc_conf: str = "") -> Iterator[None]:
    """Within this block, a Ray head started by `ray.init` runs only the processes asked for
    (`dashboard_in_process`: the dashboard in a thread of this process, `DashboardThread`), and the
    GCS and the raylet, which Ray runs with jemalloc, get `jemalloc_conf` as their MALLOC_CONF (unless
    the environment has one)."""
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
            command = _in_this_process(command)
        # Only the dashboard with rayborg's list of modules (with the dashboard off, Ray's own minimal one
        # keeps its process: UsageStatsHead is not a module this process knows to import alone).
        if (process_type == ray_constants.PROCESS_TYPE_DASHBOARD and in_thread
                and f"--modules-to-load={modules}" in command and _script_at(command) is not None):
            return services.ProcessInfo(process=DashboardThread(command), stdout_file=None, stderr_file=None,
                                        use_valgrind=False, use_gdb=False, use_valgrind_profiler=False,
                                        use_perftools_profiler=False, use_tmux=False)
        if (process_type in (ray_constants.PROCESS_TYPE_GCS_SERVER, ray_constants.PROCESS_TYPE_RAYLET)
                and jemalloc_conf and "MALLOC_CONF" not in os.environ):
            kwargs["env_updates"] = {**(kwargs.get("env_updates") or {}), "MALLOC_CONF": jemalloc_conf}
        if process_type == ray_constants.PROCESS_TYPE_RAYLET and lazy_runtime_env_agent:
            command = _lazy_agent_command(command)
        if process_type == ray_constants.PROCESS_TYPE_RAYLET and modules != ALL_MODULES:
            command = _trimmed_agent_command(command, agent_modules(modules))
        return original_start(command, process_type, *args, **kwargs)

    # The dashboard in this process starts after the raylet: Ray starts the raylet by a fork of this
    # process, which must not have the dashboard's gRPC threads yet (the child dies before its exec).
    in_thread = dashboard_in_process and modules != ALL_MODULES
    original_api, original_processes = node.Node.start_api_server, node.Node.start_ray_processes
    deferred: list[tuple[Any, dict[str, Any]]] = []

    def start_api_server(self, **kwargs: Any) -> None:
        deferred.append((self, kwargs)) if in_thread else original_api(self, **kwargs)

    def start_ray_processes(self) -> None:
        original_processes(self)
        while deferred:
            head, kwargs = deferred.pop(0)
            original_api(head, **kwargs)

    node.Node.__init__, services.start_ray_process = init, start
    node.Node.start_api_server, node.Node.start_ray_processes = start_api_server, start_ray_processes
    try:
        yield
    finally:
        node.Node.__init__, services.start_ray_process = original_init, original_start
        node.Node.start_api_server, node.Node.start_ray_processes = original_api, original_processes


# The GCS's and the raylet's jemalloc (Ray preloads it into both): one arena, no thread caches, freed
# pages returned at once. Neither is on a bind's path (actor calls go from worker to worker); measured
# with bench/memory_breakdown.py, ~10 MiB less of their memory (GCS 26 -> 20 MiB, raylet 10 -> 7 of
# anonymous memory, idle).
JEMALLOC_CONF = "narenas:1,tcache:false,dirty_decay_ms:0,muzzy_decay_ms:0"


def _script_at(command: list[str]) -> int | None:
    """Where the dashboard's command line names what it runs (Ray's dashboard.py, or this module)."""
    script_path = os.path.join("dashboard", "dashboard.py")
    for i, arg in enumerate(command):
        if arg.endswith(script_path):
            return i
        if arg == "-m" and command[i + 1:i + 2] == ["rayborg.ray_head"]:
            return i + 1
    return None


def _in_this_process(command: list[str]) -> list[str]:
    """The dashboard's command line with this module in place of Ray's dashboard.py."""
    script = _script_at(command)
    if script is None or command[script] == "rayborg.ray_head":  # not what this was written for, or done
        return command
    return [*command[:script], "-m", "rayborg.ray_head", *command[script + 1:]]


class DashboardThread:
    """Ray's dashboard head run in a thread of this process (`rayborg serve`, which imports Ray's
    core already), on an event loop of its own, instead of a process of its own (~70 MiB PSS less,
    bench/memory_breakdown.py): the same DashboardHead, modules and command line options; its log goes
    to the session's dashboard.log as before, not to serve's log. To Ray's node, which starts, polls
    and stops its processes, it is a `subprocess.Popen`: `poll`, `terminate`, `wait`, `kill`. Ray
    waits for the dashboard's address in the GCS as for a process of its own."""

    def __init__(self, command: list[str]) -> None:
        import threading

        self.args = _dashboard_options(command[_script_at(command) + 1:])
        self.pid = os.getpid()
        self.returncode: int | None = None
        self._loop: Any = None
        self._thread = threading.Thread(target=self._run, name="ray-dashboard", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import asyncio
        import logging

        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            head = _dashboard_head(self.args)
            loop.run_until_complete(head.run())
            self.returncode = 0
        except BaseException:  # noqa: BLE001 - as a dashboard process would, say why it ended
            logging.getLogger("ray.dashboard").exception("the dashboard stopped")
            self.returncode = 1
        finally:
            if self.returncode is None:  # stopped by terminate()
                self.returncode = 0

    def poll(self) -> int | None:
        return self.returncode if not self._thread.is_alive() else None

    def terminate(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(loop.stop)
            except RuntimeError:  # closed meanwhile
                pass

    kill = terminate

    def wait(self, timeout: float | None = None) -> int:
        import subprocess

        self._thread.join(timeout)
        if self._thread.is_alive():
            raise subprocess.TimeoutExpired("ray-dashboard", timeout or 0)
        return self.returncode or 0


def _dashboard_options(argv: list[str]) -> dict[str, Any]:
    """dashboard.py's options (`--name=value`, `--flag`), with its defaults."""
    from ray._private import ray_constants
    from ray.dashboard import consts

    opts: dict[str, Any] = {"port-retries": "0", "logging-level": ray_constants.LOGGER_LEVEL,
                            "logging-format": ray_constants.LOGGER_FORMAT,
                            "logging-filename": consts.DASHBOARD_LOG_FILENAME, "logging-rotate-bytes": "0",
                            "logging-rotate-backup-count": "0", "modules-to-load": "",
                            "proxy-server-url": "", "temp-dir": None, "session-dir": None}
    for arg in argv:
        name, _, value = arg[2:].partition("=")
        opts[name] = value if _ else True
    return opts


def _dashboard_head(opts: dict[str, Any]):
    """dashboard.py's main, without what belongs to a process of its own: its log configuration (a
    handler of the `ray.dashboard` loggers instead of the root logger's), the redirection of stdout and
    stderr, the process title and the SIGTERM handler."""
    import logging
    import logging.handlers
    import threading

    modules_in_this_process()
    modules = {m.strip() for m in str(opts["modules-to-load"]).split(",") if m.strip()}
    import_only(modules)
    from ray.dashboard import head

    level = opts["logging-level"]
    level = logging.getLevelName(level.upper()) if isinstance(level, str) and not level.isdigit() else int(level)
    if opts.get("log-dir") and opts["logging-filename"]:
        handler: logging.Handler = logging.handlers.RotatingFileHandler(
            os.path.join(opts["log-dir"], opts["logging-filename"]),
            maxBytes=int(opts["logging-rotate-bytes"]), backupCount=int(opts["logging-rotate-backup-count"]))
        handler.setFormatter(logging.Formatter(opts["logging-format"]))
        for name in ("ray.dashboard", "ray._private.usage"):
            logger = logging.getLogger(name)
            logger.addHandler(handler)
            logger.setLevel(level)
            logger.propagate = False
        # What the dashboard's thread logs through loggers this process shares (Ray's own warnings,
        # aiohttp's access log of the dashboard's server) goes to its file as well, not to serve's log.
        thread = threading.current_thread().name

        class ToDashboardLog(logging.Filter):
            def filter(self, record: logging.LogRecord) -> bool:
                if record.threadName != thread:
                    return True
                if record.levelno >= handler.level:
                    handler.handle(record)
                return False

        for name in ("ray", "aiohttp.access", "aiohttp.server", "aiohttp.web"):
            logging.getLogger(name).addFilter(ToDashboardLog())
    return head.DashboardHead(
        http_host=opts["host"], http_port=int(opts["port"]), http_port_retries=int(opts["port-retries"]),
        gcs_address=opts["gcs-address"], cluster_id_hex=opts["cluster-id-hex"],
        node_ip_address=opts["node-ip-address"], log_dir=opts.get("log-dir"), logging_level=level,
        logging_format=opts["logging-format"], logging_filename=opts["logging-filename"],
        logging_rotate_bytes=int(opts["logging-rotate-bytes"]),
        logging_rotate_backup_count=int(opts["logging-rotate-backup-count"]), temp_dir=opts["temp-dir"],
        session_dir=opts["session-dir"], minimal=bool(opts.get("minimal")),
        serve_frontend=not opts.get("disable-frontend"), modules_to_load=modules or None,
        proxy_server_url=opts["proxy-server-url"] or None)


class _ThisProcess:
    """What a SubprocessModuleHandle asks of the module's process, for a module running here."""

    exitcode = None

    def __init__(self) -> None:
        self.pid = os.getpid()

    def is_alive(self) -> bool:
        return True

    def terminate(self) -> None:
        pass

    kill = terminate

    def join(self, timeout: float | None = None) -> None:
        pass


def modules_in_this_process() -> None:
    """Make Ray's dashboard run its SubprocessModules in its own process and event loop: each module
    is made and its `run()` (its aiohttp server on the module's Unix socket, its background tasks)
    scheduled on the dashboard's loop; the handle proxies to that socket as before. There is no
    process to watch, so the handle's health check only waits for `run()`, and fails (the dashboard
    logs it) if that raises."""
    from ray.dashboard.subprocesses import handle as handle_module
    from ray.dashboard.subprocesses.utils import get_http_session_to_module

    cls = handle_module.SubprocessModuleHandle

    def start_module(self) -> None:
        os.makedirs(self.config.socket_dir, exist_ok=True)
        self.process = _ThisProcess()
        module = self.module_cls(self.config)
        self._rayborg_module = module  # keeps it (and its background tasks' owner) alive
        self._rayborg_running = self.loop.create_task(module.run(), name=f"{self.module_cls.__name__}.run")

    def wait_for_module_ready(self) -> None:
        self.http_client_session = get_http_session_to_module(
            self.module_cls.__name__, self.config.socket_dir, self.config.session_name)
        self.health_check_task = self.loop.create_task(self._rayborg_running_check())

    async def running_check(self) -> None:
        await self._rayborg_running  # raises (and the dashboard logs it) when the module failed to start

    cls.preload_in_forkserver = classmethod(lambda klass, module_classes: None)
    cls.start_module = start_module
    cls.wait_for_module_ready = wait_for_module_ready
    cls._rayborg_running_check = running_check


LAZY_AGENT = "--lazy-runtime-env-agent"
AGENT_SCRIPT = os.path.join("runtime_env", "agent", "main.py")


def _lazy_agent_command(command: list[str]) -> list[str]:
    """The raylet's command line with the lazy stand-in as its runtime-env agent."""
    import shlex
    import subprocess

    flag = "--runtime_env_agent_command="
    out = []
    for arg in command:
        if arg.startswith(flag):
            agent = shlex.split(arg[len(flag):])
            at = next((i for i, a in enumerate(agent) if a.endswith(AGENT_SCRIPT)), None)
            if at is not None:
                agent = [*agent[:at], "-m", "rayborg.ray_head", LAZY_AGENT, agent[at], *agent[at + 1:]]
                arg = flag + subprocess.list2cmdline(agent)  # as Ray writes it
        out.append(arg)
    return out


AGENT_MODULES = "--agent-modules="
DASHBOARD_AGENT_SCRIPT = os.path.join("dashboard", "agent.py")
# Where Ray defines its dashboard agent's modules (one agent per node, started by the raylet). By
# default the agent runs those the actors' metrics (ReporterAgent: /metrics relays its export port),
# the dashboard's logs and `ray logs` (LogAgent, LogAgentV1Grpc) and its health check need, not the
# event, job and event-aggregator modules, which serve only the dashboard modules that are off unless
# asked for (EventHead, JobHead) or an event export rayborg does not configure (~10 MiB PSS less).
AGENT_MODULE_HOMES = {"ReporterAgent": "ray.dashboard.modules.reporter.reporter_agent",
                      "HealthzAgent": "ray.dashboard.modules.reporter.healthz_agent",
                      "LogAgent": "ray.dashboard.modules.log.log_agent",
                      "LogAgentV1Grpc": "ray.dashboard.modules.log.log_agent",
                      "JobAgent": "ray.dashboard.modules.job.job_agent",
                      "EventAgent": "ray.dashboard.modules.event.event_agent"}
AGENT_FOR_HEAD = {"JobHead": "JobAgent", "EventHead": "EventAgent"}


def agent_modules(dashboard_modules: str) -> list[str]:
    """The agent modules a list of dashboard modules needs."""
    asked = {m.strip() for m in dashboard_modules.split(",") if m.strip()}
    return ["ReporterAgent", "HealthzAgent", "LogAgent", "LogAgentV1Grpc",
            *sorted(AGENT_FOR_HEAD[m] for m in asked if m in AGENT_FOR_HEAD)]


def _trimmed_agent_command(command: list[str], modules: list[str]) -> list[str]:
    """The raylet's command line with the dashboard agent run by this module (only `modules`)."""
    import shlex
    import subprocess

    flag = "--dashboard_agent_command="
    out = []
    for arg in command:
        if arg.startswith(flag):
            agent = shlex.split(arg[len(flag):])
            at = next((i for i, a in enumerate(agent) if a.endswith(DASHBOARD_AGENT_SCRIPT)), None)
            if at is not None:
                agent = [*agent[:at], "-m", "rayborg.ray_head", AGENT_MODULES + ",".join(modules), agent[at],
                         *agent[at + 1:]]
                arg = flag + subprocess.list2cmdline(agent)
        out.append(arg)
    return out


def _run_agent(modules: set[str], agent_script: str) -> None:
    """Ray's dashboard agent (agent.py as its `__main__`), loading only `modules`."""
    import importlib
    import runpy

    from ray.dashboard import utils

    original = utils.get_all_modules

    def get_all_modules(module_type: type) -> list[type]:
        if module_type is not utils.DashboardAgentModule:
            return original(module_type)
        for name in sorted(modules):
            importlib.import_module(AGENT_MODULE_HOMES[name])
        return [m for m in module_type.__subclasses__() if m.__name__ in modules
                and getattr(m, "__ray_dashboard_module_enable__", True)]

    if modules <= AGENT_MODULE_HOMES.keys():
        utils.get_all_modules = get_all_modules
    sys.argv = [agent_script, *sys.argv[3:]]
    runpy.run_path(agent_script, run_name="__main__")


def _option(args: list[str], name: str) -> str:
    return next(a.split("=", 1)[1] for a in args if a.startswith(f"--{name}="))


def lazy_runtime_env_agent(agent_script: str, args: list[str], poll: float = 1.0) -> None:
    """Stand in for Ray's runtime-env agent until somebody calls it: bind its port and record it in the
    session directory as the agent does (the raylet waits for that file), then wait, importing
    nothing of Ray. On the first connection, become Ray's agent (exec: the same pid, which the
    raylet watches) on the same port; the connections made meanwhile are refused or reset, and the
    raylet's agent client retries those (every second, for minutes). Exits when the raylet is gone."""
    import select
    import socket

    host, port = _option(args, "node-ip-address"), int(_option(args, "runtime-env-agent-port"))
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    listener = socket.socket(family, kind, proto)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(address)
    listener.listen(128)
    bound = listener.getsockname()[1]
    path = os.path.join(_option(args, "session-dir"), f"runtime_env_agent_port_{_option(args, 'node-id')}")
    with open(path + ".tmp", "w") as f:
        f.write(str(bound))
    os.replace(path + ".tmp", path)
    raylet = os.getppid()
    while not select.select([listener], [], [], poll)[0]:
        if os.getppid() != raylet:
            return
    listener.close()
    flags = sys.orig_argv[1:sys.orig_argv.index("-m")]  # the interpreter's own options (-u)
    os.execv(sys.executable, [sys.executable, *flags, agent_script,
                              *[a for a in args if not a.startswith("--runtime-env-agent-port=")],
                              f"--runtime-env-agent-port={bound}"])


# Where Ray defines the modules rayborg loads by default, so that the dashboard imports only these
# (~5 MiB less than every module of ray.dashboard.modules, which Ray imports to find the classes).
MODULE_HOMES = {"NodeHead": "ray.dashboard.modules.node.node_head",
                "StateHead": "ray.dashboard.modules.state.state_head"}


def import_only(names: set[str]) -> None:
    """Ray's dashboard finds its module classes by importing every package of ray.dashboard.modules;
    when each module asked for has a known home, import those only (else leave Ray's way alone)."""
    import importlib

    from ray.dashboard import utils

    if not names or not names <= MODULE_HOMES.keys():
        return

    def get_all_modules(module_type: type) -> list[type]:
        for name in sorted(names):
            importlib.import_module(MODULE_HOMES[name])
        return [m for m in module_type.__subclasses__()
                if getattr(m, "__ray_dashboard_module_enable__", True)]

    utils.get_all_modules = get_all_modules


def _run_dashboard() -> None:
    """Ray's dashboard.py as its `__main__`, with the modules in this process."""
    import importlib.util
    import runpy

    modules_in_this_process()
    asked = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--modules-to-load=")), "")
    import_only({m.strip() for m in asked.split(",") if m.strip()})
    spec = importlib.util.find_spec("ray.dashboard.dashboard")
    assert spec is not None and spec.origin
    sys.argv[0] = spec.origin
    runpy.run_path(spec.origin, run_name="__main__")


if __name__ == "__main__":
    if sys.argv[1:2] == [LAZY_AGENT]:
        lazy_runtime_env_agent(sys.argv[2], sys.argv[3:])
    elif sys.argv[1].startswith(AGENT_MODULES):
        _run_agent(set(sys.argv[1][len(AGENT_MODULES):].split(",")), sys.argv[2])
    else:
        _run_dashboard()

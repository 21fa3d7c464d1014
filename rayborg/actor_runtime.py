"""Starts the Ray side of `rayborg serve`: Ray itself (local or joining a cluster), the singletons
(PlacementSync, binders) and the supervisor that keeps one HostAgent per node."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from rayborg import logs
from rayborg.actors.runtime_config import NAMESPACE, RuntimeConfig
from rayborg.ray_head import trimmed_head
from rayborg.settings import Settings

log = logging.getLogger("rayborg.runtime")
STOP_RAY_SECONDS = 15.0
T = TypeVar("T")


def _unified_limits(settings: Settings) -> dict | None:
    """[unified_limits] for the binders' claims when Keystone's limits apply (keystone mode, enabled)."""
    from rayborg.api.quota_limits import from_keystone

    return settings.unified_limits.model_dump() if from_keystone(settings) else None


def runtime_config(settings: Settings) -> RuntimeConfig:
    keystone = settings.keystone.model_dump(exclude_none=True) if settings.keystone.auth_url else {}
    return RuntimeConfig(
        database_url=settings.database_url, placement_url=settings.placement_url,
        placement_token=settings.placement_token, nova_url=settings.nova_url, nova_token=settings.nova_token,
        keystone=keystone, sysfs_root=settings.sysfs_root, dev_root=settings.dev_root,
        drivers=settings.enabled_drivers, driver_options=settings.resolved_driver_options(),
        fake_devices=settings.fake_devices, report_interval=settings.report_interval,
        binder_count=settings.binder_count,
        max_group_amount=settings.max_group_amount, max_profile_amount=settings.max_profile_amount, quota=settings.quota, unified_limits=_unified_limits(settings), log_format=logs.resolve_format(), log_level=settings.log_level)


@dataclass
class Runtime:
    # None where another process supervises: extra front doors of a serve, a joined front door
    # (`rayborg/join.py`) until it takes the lease over.
    supervisor: object | None
    binder: object
    started_ray: bool
    gcs_address: str | None = None
    dashboard_url: str | None = None  # http://host:port, None when the dashboard is off

    async def stop(self) -> None:
        if self.supervisor is not None:
            await self.supervisor.stop()
        try:
            await in_daemon_thread(self._stop_ray, "rayborg-stop-ray", STOP_RAY_SECONDS)
        except Exception as exc:  # noqa: BLE001 - shutting down: say so and go on
            log.warning("Ray did not shut down cleanly: %s", exc or type(exc).__name__)

    def _stop_ray(self) -> None:
        import ray

        if self.started_ray:
            # A local Ray dies with us: take the detached actors along, so that a restart is clean.
            for actor in ray.util.list_named_actors(all_namespaces=True):
                if actor["namespace"] == NAMESPACE:
                    ray.kill(ray.get_actor(actor["name"], namespace=NAMESPACE), no_restart=True)
        ray.shutdown()


async def in_daemon_thread(fn: Callable[[], T], name: str, timeout: float | None = None,
                           stay: threading.Event | None = None) -> T:
    """`fn()` in a daemon thread, which then waits for `stay` (if given) before it ends. Unlike
    asyncio.to_thread's executor, a daemon thread is not joined at interpreter exit, so a daemon never
    hangs on a Ray call that will not return (a SIGTERM to the whole process group kills Ray's own
    processes first; a stop during Ray's start)."""
    done = asyncio.get_running_loop().create_future()

    def run() -> None:
        try:
            outcome, failed = fn(), False
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting coroutine
            outcome, failed = exc, True

        def settle() -> None:
            if not done.done():
                done.set_exception(outcome) if failed else done.set_result(outcome)

        try:
            done.get_loop().call_soon_threadsafe(settle)
        except RuntimeError:  # the loop has closed: nobody is waiting any more
            pass
        if stay is not None:
            stay.wait()

    threading.Thread(target=run, name=name, daemon=True).start()
    try:
        return await asyncio.wait_for(done, timeout)
    except asyncio.TimeoutError:
        raise TimeoutError(f"no answer within {timeout:.0f} s") from None


def init_ray(settings: Settings) -> tuple[str, str | None]:
    """Connect this process to Ray (a local head it starts, or the cluster at `ray_address`): the
    cluster's GCS address and dashboard URL."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    local = settings.ray_address == "local"
    kwargs = {"namespace": NAMESPACE, "log_to_driver": False}
    if local:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        kwargs.update(include_dashboard=settings.ray_dashboard, dashboard_host="127.0.0.1",
                      num_cpus=max(os.cpu_count() or 2, 2))
        with trimmed_head(settings.ray_dashboard_modules, settings.ray_autoscaler_monitor,
                          settings.ray_log_monitor, dashboard_in_process=not settings.ray_dashboard_process,
                          jemalloc_conf=settings.ray_jemalloc_conf):
            ctx = ray.init(address=settings.ray_address, **kwargs)
    else:
        ctx = ray.init(address=settings.ray_address, **kwargs)
    gcs_address = ray.get_runtime_context().gcs_address
    dashboard = getattr(ctx, "dashboard_url", None)
    dashboard_url = (dashboard if "://" in dashboard else f"http://{dashboard}") if dashboard else None
    # Where operators (and `ray list actors --address`, the CLI's --address) find this daemon's cluster;
    # `ray status` needs the autoscaler monitor, off on a local head unless ray_autoscaler_monitor.
    how = "started locally" if local else f"joined at {settings.ray_address}"
    log.info("Ray %s (address %s, dashboard %s)", how, gcs_address, dashboard_url or "off")
    return gcs_address, dashboard_url


def start_supervisor(settings: Settings):
    """The singletons up (those that run already are kept: `get_if_exists`) and a HostAgent on every
    node; the supervisor's loop starts with the app (`Supervisor.start`)."""
    from rayborg.actors.supervisor import Supervisor

    supervisor = Supervisor(runtime_config(settings))
    supervisor.start_singletons()
    supervisor.reconcile()
    return supervisor


def start_runtime(settings: Settings, store) -> Runtime:
    """Connect to (or start) Ray and bring the actors up (the supervisor's loop starts with the app)."""
    gcs_address, dashboard_url = init_ray(settings)
    runtime = use_actors(settings, store, gcs_address, dashboard_url, supervisor=start_supervisor(settings))
    runtime.started_ray = settings.ray_address == "local"
    return runtime


def use_actors(settings: Settings, store, gcs_address: str | None = None, dashboard_url: str | None = None,
               supervisor: object | None = None) -> Runtime:
    """The front door's side of the actors; without `supervisor`, those another process started."""
    from rayborg.api.ray_binder import RayBinder

    return Runtime(supervisor=supervisor, binder=RayBinder(store, settings.binder_count), started_ray=False,
                   gcs_address=gcs_address, dashboard_url=dashboard_url)


def connect_runtime(settings: Settings, store, address: str) -> Runtime:
    """For an extra front-door process: join the Ray the first process started, use its actors."""
    import ray

    ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)
    return use_actors(settings, store, address)


class Pending:
    """`app["binder"]` or `app["programmer"]` while Ray and the actors start. The front door answers
    at once; the hand-offs it makes meanwhile (binds it committed as BindStarted, releases, program
    requests it recorded) queue here in order and go to the real one once `attach` gives it; after
    that, calls go straight through. Nothing is only here: the store holds every such request, and
    the binders and the programmer take up at their start what a daemon stopped early left."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.target: Any = None
        self._queue: list[tuple[str, tuple[Any, ...]]] = []

    async def submit(self, *args: Any) -> None:
        await self._call("submit", args)

    async def released(self, *args: Any) -> None:
        await self._call("released", args)

    async def _call(self, method: str, args: tuple[Any, ...]) -> None:
        if self.target is None:
            self._queue.append((method, args))
        else:
            await getattr(self.target, method)(*args)

    async def attach(self, target: Any) -> None:
        self.target = target
        queued, self._queue = self._queue, []
        if queued:
            log.info("%d %s hand-offs made while the actors started: passed on", len(queued), self.what)
        for method, args in queued:
            await getattr(target, method)(*args)

    async def drain(self) -> None:
        if self.target is not None:
            await self.target.drain()

    async def close(self) -> None:
        if self.target is not None:
            await self.target.close()
        elif self._queue:
            log.warning("stopped before the actors were up: %d %s hand-offs are left in the store for the "
                        "next start", len(self._queue), self.what)


class _Dropped:
    @staticmethod
    def remote(*args: Any, **kwargs: Any) -> None:
        return None


class LateActor:
    """`app["placement_sync"]` while the actors start: its methods' `.remote()` do nothing until the
    handle is known. Only for hints the actor makes good on by itself at its start (PlacementSync
    pushes whatever is dirty in the store when it starts, so an early `nudge` is not needed)."""

    def __init__(self) -> None:
        self.handle: Any = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return _Dropped if self.handle is None else getattr(self.handle, name)


def _take_back_stop_signals() -> None:
    """Ray's core worker installs its own SIGTERM handler (a stack dump, then abort) when it starts,
    over the one the event loop set to stop gracefully (Ray started before the loop, until the front
    door answered first). Re-installing Python's handlers, which the loop's still are, undoes that."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.getsignal(sig))


class StartingRuntime:
    """The Ray side of one front door, brought up in the background once it answers: `start` (Ray
    and the actors, blocking) runs in a thread of its own, then `on_up` (also blocking: record the
    Ray address, tell the extra front doors), then the binder and programmer queued meanwhile are
    attached. Reads need none of it; writes that need the actors wait in `Pending`."""

    def __init__(self, store: Any, start: Callable[[], Runtime],
                 on_up: Callable[[Runtime], None] | None = None) -> None:
        self.store, self._start, self._on_up = store, start, on_up
        self.binder = Pending("bind")
        self.programmer = Pending("programming")
        self.placement_sync = LateActor()
        self.runtime: Runtime | None = None
        self.failure: BaseException | None = None
        self._task: asyncio.Task | None = None
        self._stopped = threading.Event()

    @property
    def state(self) -> str:
        return "failed" if self.failure else "up" if self.programmer.target is not None else "starting"

    async def on_startup(self, app: Any) -> None:
        self._task = asyncio.get_running_loop().create_task(self._bring_up(), name="rayborg-start-actors")

    async def _bring_up(self) -> None:
        import time

        started = time.monotonic()
        try:
            # The thread stays until the daemon stops: the processes a local Ray starts die with the
            # thread that started them (Linux's PR_SET_PDEATHSIG follows the thread, not the process).
            self.runtime = runtime = await in_daemon_thread(self._start, "rayborg-ray", stay=self._stopped)
            _take_back_stop_signals()
            self.placement_sync.handle, programmer = await asyncio.to_thread(self._handles)
            if self._on_up is not None:
                await asyncio.to_thread(self._on_up, runtime)
            if runtime.supervisor is not None:  # the first front door: it also resumes programming
                runtime.supervisor.start()
                await programmer.resume()
            await self.binder.attach(runtime.binder)
            await self.programmer.attach(programmer)
        except Exception as exc:  # noqa: BLE001 - a daemon without its actors must not go on
            self.failure = exc
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log.error("the actors did not start: %s", why, exc_info=log.isEnabledFor(logging.DEBUG))
            os.kill(os.getpid(), signal.SIGTERM)
            return
        log.info("actors up (%.1f s after the front door started)", time.monotonic() - started)

    def _handles(self) -> tuple[Any, Any]:
        import ray

        from rayborg.actors.runtime_config import PLACEMENT_SYNC_NAME
        from rayborg.api.ray_programmer import RayProgrammer

        return ray.get_actor(PLACEMENT_SYNC_NAME, namespace=NAMESPACE), RayProgrammer(self.store)

    async def on_cleanup(self, app: Any) -> None:
        if self._task is not None and not self._task.done():
            log.warning("stopping while the actors start")
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.programmer.close()
        if self.runtime is not None:
            await self.runtime.stop()
        self._stopped.set()

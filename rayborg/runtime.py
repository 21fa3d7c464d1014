"""Starts the Ray side of `rayborg serve`: Ray itself (local or joining a cluster), the singletons
(PlacementSync, binders) and the supervisor that keeps one HostAgent per node."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from dataclasses import dataclass

from rayborg import logs
from rayborg.actors.runtime_config import NAMESPACE, RuntimeConfig
from rayborg.settings import Settings

log = logging.getLogger("rayborg.runtime")
STOP_RAY_SECONDS = 15.0


def runtime_config(settings: Settings) -> RuntimeConfig:
    keystone = settings.keystone.model_dump(exclude_none=True) if settings.keystone.auth_url else {}
    return RuntimeConfig(
        database_url=settings.database_url, placement_url=settings.placement_url,
        placement_token=settings.placement_token, nova_url=settings.nova_url, nova_token=settings.nova_token,
        keystone=keystone, sysfs_root=settings.sysfs_root, dev_root=settings.dev_root,
        drivers=settings.enabled_drivers, driver_options=settings.resolved_driver_options(),
        fake_devices=settings.fake_devices, report_interval=settings.report_interval,
        binder_count=settings.binder_count,
        max_group_amount=settings.max_group_amount, max_profile_amount=settings.max_profile_amount, log_format=logs.resolve_format(), log_level=settings.log_level)


@dataclass
class Runtime:
    supervisor: object | None  # None in extra front-door processes: the first one supervises
    binder: object
    started_ray: bool
    gcs_address: str | None = None
    dashboard_url: str | None = None  # http://host:port, None when the dashboard is off

    async def stop(self) -> None:
        if self.supervisor is not None:
            await self.supervisor.stop()
        # Never hang a shutdown on a Ray that is already half gone (a SIGTERM to the whole process
        # group kills Ray's own processes first): a daemon thread, unlike asyncio.to_thread's
        # executor, is not joined at interpreter exit when it is still blocked in a Ray call.
        done = asyncio.get_running_loop().create_future()

        def stop_ray() -> None:
            try:
                self._stop_ray()
                outcome = None
            except Exception as exc:  # noqa: BLE001
                outcome = exc
            try:
                done.get_loop().call_soon_threadsafe(lambda: done.done() or done.set_result(outcome))
            except RuntimeError:  # the loop has closed: nobody is waiting any more
                pass

        threading.Thread(target=stop_ray, name="rayborg-stop-ray", daemon=True).start()
        try:
            failure = await asyncio.wait_for(done, timeout=STOP_RAY_SECONDS)
        except asyncio.TimeoutError:
            failure = f"no answer within {STOP_RAY_SECONDS:.0f} s"
        if failure is not None:
            log.warning("Ray did not shut down cleanly: %s", failure)

    def _stop_ray(self) -> None:
        import ray

        if self.started_ray:
            # A local Ray dies with us: take the detached actors along, so that a restart is clean.
            for actor in ray.util.list_named_actors(all_namespaces=True):
                if actor["namespace"] == NAMESPACE:
                    ray.kill(ray.get_actor(actor["name"], namespace=NAMESPACE), no_restart=True)
        ray.shutdown()


def start_runtime(settings: Settings, store) -> Runtime:
    """Connect to (or start) Ray and bring the actors up (the supervisor's loop starts with the app)."""
    import ray

    from rayborg.actors.supervisor import Supervisor
    from rayborg.api.ray_binder import RayBinder

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    local = settings.ray_address == "local"
    kwargs = {"namespace": NAMESPACE, "log_to_driver": False}
    if local:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        kwargs.update(include_dashboard=settings.ray_dashboard, dashboard_host="127.0.0.1",
                      num_cpus=max(os.cpu_count() or 2, 2))
    ctx = ray.init(address=settings.ray_address, **kwargs)
    gcs_address = ray.get_runtime_context().gcs_address
    dashboard = getattr(ctx, "dashboard_url", None)
    dashboard_url = (dashboard if "://" in dashboard else f"http://{dashboard}") if dashboard else None
    # Where operators (and `ray status --address`, the CLI's --address) find this daemon's cluster.
    how = "started locally" if local else f"joined at {settings.ray_address}"
    log.info("Ray %s (address %s, dashboard %s)", how, gcs_address, dashboard_url or "off")
    config = runtime_config(settings)
    supervisor = Supervisor(config)
    supervisor.start_singletons()
    supervisor.reconcile()
    return Runtime(supervisor=supervisor, binder=RayBinder(store, config.binder_count), started_ray=local,
                   gcs_address=gcs_address, dashboard_url=dashboard_url)


def connect_runtime(settings: Settings, store, address: str) -> Runtime:
    """For an extra front-door process: join the Ray the first process started, use its actors."""
    import ray

    from rayborg.api.ray_binder import RayBinder

    ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)
    return Runtime(supervisor=None, binder=RayBinder(store, settings.binder_count), started_ray=False)

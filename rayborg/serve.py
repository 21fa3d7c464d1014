"""`rayborg serve`: migrate the store, bring up Ray and the actors, serve the REST API.

On the embedded default this starts a local Ray inside this process; with `ray_address` it joins
an existing cluster, where every node gets its HostAgent from the supervisor. Several front-door
processes may share the port (SO_REUSEPORT): the first one owns Ray's actors, the others only
connect to them.
"""

from __future__ import annotations

import logging
import multiprocessing
import socket

from aiohttp import web
from sqlalchemy.engine import make_url

from rayborg import logs
from rayborg.settings import Settings

log = logging.getLogger("rayborg.serve")


def _safe_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def build_app(settings: Settings, store, runtime=None) -> web.Application:
    from rayborg.api.app import create_app

    app = create_app(settings, store, binder=runtime.binder if runtime else None)
    if runtime is not None:
        import ray

        from rayborg.actors.runtime_config import NAMESPACE, PLACEMENT_SYNC_NAME

        from rayborg.api.ray_programmer import RayProgrammer

        app["placement_sync"] = ray.get_actor(PLACEMENT_SYNC_NAME, namespace=NAMESPACE)
        app["programmer"] = RayProgrammer(store)
        app["runtime"] = runtime

        async def supervise(app: web.Application) -> None:
            if runtime.supervisor is not None:  # the first front door: it also resumes programming
                runtime.supervisor.start()
                await app["programmer"].resume()

        async def stop(app: web.Application) -> None:
            await app["programmer"].close()
            await runtime.stop()

        app.on_startup.append(supervise)
        app.on_cleanup.append(stop)
    return app


def _listen_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def _worker(settings_json: str, ray_address: str | None) -> None:
    """An extra front-door process: same port, its own store handle, the actors of the first."""
    from rayborg.runtime import connect_runtime
    from rayborg.store.engine import Store

    settings = Settings.model_validate_json(settings_json)
    logs.setup(None, settings.log_level)  # the format the parent resolved, from $RAYBORG_LOG_FORMAT
    store = Store(settings.database_url)
    runtime = connect_runtime(settings, store, ray_address) if ray_address else None
    app = build_app(settings, store, runtime)
    web.run_app(app, sock=_listen_socket(settings.host, settings.port), print=None, access_log=None)


def serve(settings: Settings) -> int:
    from rayborg.store.engine import Store
    from rayborg.store.migrate import upgrade

    revision = upgrade(settings.database_url)
    log.info("database %s at schema %s", _safe_url(settings.database_url), revision)
    store = Store(settings.database_url)
    runtime = None
    if settings.actors:
        from rayborg.runtime import start_runtime

        runtime = start_runtime(settings, store)
    extra = []
    if settings.api_workers > 1:
        ray_address = runtime.gcs_address if runtime else None
        ctx = multiprocessing.get_context("spawn")
        for _ in range(settings.api_workers - 1):
            proc = ctx.Process(target=_worker, args=(settings.model_dump_json(), ray_address), daemon=True)
            proc.start()
            extra.append(proc)
    app = build_app(settings, store, runtime)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    log.info("rayborg serving the Cyborg v2 API on http://%s:%d (database %s, auth %s, %d front-door "
             "process%s, actors %s)", host, settings.port, _safe_url(settings.database_url),
             settings.auth_strategy, settings.api_workers, "es" if settings.api_workers > 1 else "",
             "on" if runtime else "off")
    try:
        web.run_app(app, sock=_listen_socket(settings.host, settings.port), print=None, access_log=None,
                    shutdown_timeout=5)
    finally:
        for proc in extra:
            proc.terminate()
            proc.join(5)
        store.dispose()
    log.info("rayborg stopped")
    return 0


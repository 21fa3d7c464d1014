"""`rayborg serve`: migrate the store, serve the REST API, bring up Ray and the actors.

The front door answers first (reads need only the store); Ray and the actors start in its background,
and the writes that need them meanwhile queue until they are up (`rayborg/actor_runtime.py`). On the
embedded default this starts a local Ray inside this process; with `ray_address` it joins an existing
cluster, where every node gets its HostAgent from the supervisor. Several front-door
processes of one serve share the port (SO_REUSEPORT): the first one owns Ray's actors, the others only
connect to them. Before anything starts, serve binds the port (another daemon there: exit) and takes
the database's lease (another daemon on it: exit); the lease row records where this daemon and its
Ray cluster are, for the CLI and the Python API (`store/daemon_lease.py`). `--join` makes one more front
door of that daemon, e.g. on another host, which takes no lease until the holder is gone (`rayborg/join.py`).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
from multiprocessing.connection import Connection

from aiohttp import web

from rayborg import logs
from rayborg.api import server
from rayborg.api.app_keys import PLACEMENT_SYNC, PROGRAMMER, RUNTIME
from rayborg.settings import Settings

log = logging.getLogger("rayborg.serve")


def _safe_url(url: str) -> str:
    from rayborg.store.urls import shown_url

    return shown_url(url)


def build_app(settings: Settings, store, starting=None) -> web.Application:
    """The front door; with `starting` (a `StartingRuntime`), the Ray side comes up in its background."""
    from rayborg.api.app import create_app

    if starting is None:
        return create_app(settings, store)
    app = create_app(settings, store, binder=starting.binder)
    app[PLACEMENT_SYNC] = starting.placement_sync
    app[PROGRAMMER] = starting.programmer
    app[RUNTIME] = starting
    app.on_startup.append(starting.on_startup)
    app.on_cleanup.append(starting.on_cleanup)
    return app


def _listen_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """The listening sockets of this serve's `count` front doors, bound before anything else starts.

    The first is bound without SO_REUSEPORT, so it fails while anything else holds the port, another
    rayborg included (its first socket is bound the same way); only then does it allow SO_REUSEPORT,
    for the sockets of this serve's other front doors, among which the kernel spreads connections."""
    from rayborg.cli import CLIError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    socks: list[socket.socket] = []
    try:
        for i in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restarts over TIME_WAIT
            if i:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                sock.bind((host, port))
                if count > 1 and not i:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                sock.listen(1024)  # at once: two bound sockets with SO_REUSEADDR only clash here
            except OSError as exc:
                raise CLIError(f"cannot listen on {shown}: {exc.strerror or exc} "
                               f"(another rayborg serve or another program has it)") from None
            sock.setblocking(False)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


def _exit_with(parent: int) -> None:
    """An extra front door ends when its serve is gone (killed -9): it must not keep the port."""

    def watch() -> None:
        while os.getppid() == parent:
            threading.Event().wait(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="rayborg-parent-watch", daemon=True).start()


def _worker(settings_json: str, actors: Connection | None, sock: socket.socket, parent: int) -> None:
    """An extra front-door process: its socket on the same port, its own store handle, the actors
    of the first (whose Ray address comes through `actors` once they are up)."""
    from rayborg.actor_runtime import StartingRuntime, connect_runtime
    from rayborg.store.engine import Store

    _exit_with(parent)

    settings = Settings.model_validate_json(settings_json)
    logs.setup(None, settings.log_level)  # the format the parent resolved, from $RAYBORG_LOG_FORMAT
    store = Store(settings.database_url)

    def connect():
        address = actors.recv()  # EOFError when the first front door stops before its actors are up
        if address is None:
            raise RuntimeError("the first front door's actors did not start")
        return connect_runtime(settings, store, address)

    app = build_app(settings, store, StartingRuntime(store, connect) if actors is not None else None)
    server.run(app, sock, settings)  # web.run_app with slow-client guards (api/server.py)


def _lease_lost(holder) -> None:
    log.error("this daemon lost its database lease (%s): stopping, two daemons must not share a database",
              f"now held by {holder.describe()}" if holder else "taken and let go")
    os.kill(os.getpid(), signal.SIGTERM)


def serve(settings: Settings) -> int:
    from rayborg.cli import CLIError
    from rayborg.actor_runtime import start_runtime
    from rayborg.store import daemon_lease
    from rayborg.store.daemon_lease import RAY_STARTING
    from rayborg.store.engine import Store
    from rayborg.store.migrate import upgrade

    if settings.join and (settings.ray_address == "local" or not settings.actors):
        raise CLIError("--join serves with the actors of the daemon holding the database's lease: it needs "
                       "that daemon's Ray cluster (--address auto or HOST:PORT) and the actors")
    # Ray's workers (and the CLI) have working directories of their own: a relative SQLite path
    # must name the same file for all of them.
    settings = settings.model_copy(update={"database_url": daemon_lease.absolute_url(settings.database_url)})
    socks = _listen_sockets(settings.host, settings.port, settings.api_workers)
    try:
        revision = upgrade(settings.database_url)
        store = Store(settings.database_url)
        if settings.join:
            log.info("database %s at schema %s", _safe_url(settings.database_url), revision)
            from rayborg.join import JoinedFrontDoor

            joined = JoinedFrontDoor(settings, store, _lease_lost)
            try:
                return _serve(settings, store, socks, joined.start, joined=joined)
            finally:
                joined.release()
                store.dispose()
        try:
            lease = daemon_lease.acquire(store, api_host=settings.host, api_port=settings.port,
                                         database_url=settings.database_url)
        except daemon_lease.DaemonRunning as exc:
            store.dispose()
            joinable = exc.record.ray_address is not None  # it has actors to join
            raise CLIError(f"{exc}{' (or add --join to serve beside it)' if joinable else ''}") from None
        try:
            lease.keep_alive(_lease_lost)  # from now on: starting Ray may take longer than a lease
            log.info("database %s at schema %s", _safe_url(settings.database_url), revision)
            if settings.actors:  # `rayborg status` meanwhile: starting, not --no-actors
                lease.update(ray_address=RAY_STARTING)
            return _serve(settings, store, socks, lambda: start_runtime(settings, store),
                          record=lambda runtime: lease.update(ray_address=runtime.gcs_address,
                                                              dashboard_url=runtime.dashboard_url))
        finally:
            lease.release()
            store.dispose()
    finally:
        for sock in socks:
            sock.close()


def _serve(settings: Settings, store, socks: list[socket.socket], start, record=None, joined=None) -> int:
    """Every front door answers at once; Ray and the actors come up in the first one's background
    (`start`, then `record(runtime)`), and the others join them once the first tells them where they are."""
    ctx = multiprocessing.get_context("spawn")
    extra, pipes = [], []
    for sock in socks[1:]:
        ours, theirs = ctx.Pipe() if settings.actors else (None, None)
        args = (settings.model_dump_json(), theirs, sock, os.getpid())
        proc = ctx.Process(target=_worker, args=args, daemon=True)
        proc.start()
        sock.close()  # the worker has its own copy now; a worker that dies must take its queue along
        extra.append(proc)
        if ours is not None:
            theirs.close()
            pipes.append(ours)
    starting = None
    if settings.actors:
        from rayborg.actor_runtime import StartingRuntime

        def up(runtime) -> None:
            if record is not None:
                record(runtime)
            for pipe in pipes:
                pipe.send(runtime.gcs_address)

        starting = StartingRuntime(store, start, up)
    app = build_app(settings, store, starting)
    if joined is not None:
        joined.attach(app, starting)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    log.info("rayborg serving the Cyborg v2 API on http://%s:%d (database %s, auth %s, %d front-door "
             "process%s, actors %s%s)", host, settings.port, _safe_url(settings.database_url),
             settings.auth_strategy, settings.api_workers, "es" if settings.api_workers > 1 else "",
             "starting" if starting else "off", ", joined beside the lease holder" if joined else "")
    try:
        server.run(app, socks[0], settings)  # web.run_app with slow-client guards (api/server.py)
    finally:
        for pipe in pipes:
            pipe.close()
        for proc in extra:
            proc.terminate()
            proc.join(5)
    if starting is not None and starting.failure is not None:
        return 1
    log.info("rayborg stopped")
    return 0

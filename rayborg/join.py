"""`rayborg serve --join`: one more front door of a daemon, e.g. on another host of its Ray cluster,
behind the same load balancer.

The daemon holding the database's lease (a plain `rayborg serve`) owns the singleton actors and runs
the supervisor. A joined front door takes no lease at its start and runs no supervisor: it joins the
same Ray cluster (`--address`), waits until the holder's actors are up (the lease records the holder's
Ray address once they are) and serves reads from the database and binds through those actors.

It also watches the lease, every WATCH_SECONDS. Once no live daemon holds it (the holder's process
gone: at once on the same machine, from another machine after LEASE_SECONDS without a heartbeat), it
takes the lease and starts the supervisor, which keeps the singletons that still run (they are
detached: the holder's death does not end them, and Ray restarts one whose worker dies) and starts
any that are gone. From then on it is the database's daemon; a front door started with `--join`
later joins it. When nobody holds the lease at its start, it takes it at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from rayborg.actor_runtime import Runtime, StartingRuntime, init_ray, start_supervisor, use_actors
from rayborg.settings import Settings
from rayborg.store import daemon_lease
from rayborg.store.daemon_lease import RAY_STARTING, DaemonRecord, DaemonRunning, Lease

log = logging.getLogger("rayborg.join")
WATCH_SECONDS = 2.0


class JoinedFrontDoor:
    """The lease side of a front door started with `--join` (see the module docstring)."""

    def __init__(self, settings: Settings, store: Any, on_lost: Callable[[DaemonRecord | None], None]) -> None:
        self.settings, self.store, self._on_lost = settings, store, on_lost
        self.lease: Lease | None = None
        self._watch: asyncio.Task | None = None

    def take_if_free(self, ray_address: str, dashboard_url: str | None = None) -> bool:
        """Take the lease when no live daemon holds it (blocking: database calls), recording
        `ray_address` in the same write."""
        if daemon_lease.current(self.store) is not None:
            return False
        try:
            lease = daemon_lease.acquire(self.store, api_host=self.settings.host, api_port=self.settings.port,
                                         database_url=self.settings.database_url, ray_address=ray_address,
                                         dashboard_url=dashboard_url)
        except DaemonRunning:  # another front door was quicker
            return False
        lease.keep_alive(self._on_lost)
        self.lease = lease
        return True

    def start(self) -> Runtime:
        """`StartingRuntime`'s start (blocking): join Ray, then use the lease holder's actors once they
        are up, or, when nobody holds the lease, take it and start them."""
        gcs_address, dashboard_url = init_ray(self.settings)
        while True:
            if self.take_if_free(RAY_STARTING):
                log.info("no daemon held the lease: this front door took it and starts the actors")
                runtime = use_actors(self.settings, self.store, gcs_address, dashboard_url,
                                     supervisor=start_supervisor(self.settings))
                self.lease.update(ray_address=gcs_address, dashboard_url=dashboard_url)
                return runtime
            holder = daemon_lease.current(self.store)
            if holder is not None and holder.ray_address is None:
                raise RuntimeError(f"the daemon holding the lease runs without actors ({holder.describe()}): "
                                   f"nothing to join")
            if holder is not None and holder.ray_address != RAY_STARTING:
                if holder.ray_address != gcs_address:
                    raise RuntimeError(f"the daemon holding the lease uses the Ray cluster at {holder.ray_address}, "
                                       f"this front door joined {gcs_address}")
                log.info("joined the actors of the daemon holding the lease: %s", holder.describe())
                return use_actors(self.settings, self.store, gcs_address, dashboard_url)
            time.sleep(WATCH_SECONDS)  # its actors are starting (or it just went): look again

    def attach(self, app: Any, starting: StartingRuntime) -> None:
        """Watch the lease while `app` runs."""

        async def on_startup(app: Any) -> None:
            self._watch = asyncio.get_running_loop().create_task(self._take_over(starting), name="rayborg-join")

        async def on_cleanup(app: Any) -> None:
            if self._watch is not None:
                self._watch.cancel()
                await asyncio.gather(self._watch, return_exceptions=True)

        app.on_startup.append(on_startup)
        app.on_cleanup.append(on_cleanup)

    async def _take_over(self, starting: StartingRuntime) -> None:
        """Once this front door's actors are up: take the lease when its holder is gone, then supervise."""
        while self.lease is None:
            await asyncio.sleep(WATCH_SECONDS)
            if starting.state != "up":
                continue
            runtime = starting.runtime
            # The lease names this front door's Ray cluster (the holder's, which it joined) at once:
            # the CLI and Python API read it to find the actors.
            if not await asyncio.to_thread(self.take_if_free, runtime.gcs_address, runtime.dashboard_url):
                continue
            took = time.monotonic()
            log.warning("the daemon that held the lease is gone: this front door took the lease over and "
                        "starts the supervisor")
            runtime.supervisor = supervisor = await asyncio.to_thread(start_supervisor, self.settings)
            supervisor.start()
            await starting.programmer.target.resume()  # programming the old holder left unfinished
            log.info("supervising the actors (%.1f s after taking the lease)", time.monotonic() - took)

    def release(self) -> None:
        if self.lease is not None:
            self.lease.release()

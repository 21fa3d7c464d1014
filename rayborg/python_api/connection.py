"""Reaching the daemon: its database (from the settings or given), the daemon that holds that
database's lease and the Ray cluster it recorded, joining that cluster, and calling the binders'
typed methods with Ray's and the store's failures as `RayborgError`s."""

from __future__ import annotations

import os
from typing import Any

from rayborg.python_api.errors import RayborgError


def settings_database_url() -> str:
    from rayborg.settings import SettingsError, load_settings

    try:
        return load_settings().database_url
    except SettingsError as exc:
        raise RayborgError(str(exc)) from None


def shown(url: str) -> str:
    from rayborg.store.urls import shown_url

    return shown_url(url)


def find_daemon(url: str):
    """The running daemon of the database at `url`, as its lease row records it (a DaemonRecord)."""
    from rayborg.store.daemon_lease import RAY_STARTING, find
    from rayborg.store.urls import DatabaseError, error_reason

    try:
        daemon = find(url)
    except DatabaseError as exc:
        raise RayborgError(f"cannot read database {shown(url)}: {error_reason(exc)}") from None
    if daemon is None:
        raise RayborgError(f"no rayborg daemon runs for database {shown(url)} (start one with `rayborg "
                           f"serve` with these settings, or name the database and Ray cluster of another)")
    if daemon.ray_address is None:
        raise RayborgError(f"the rayborg daemon of database {shown(url)} ({daemon.describe()}) runs without "
                           f"actors (--no-actors): it has no Ray cluster to talk to")
    if daemon.ray_address == RAY_STARTING:
        raise RayborgError(f"the rayborg daemon of database {shown(url)} ({daemon.describe()}) is starting its "
                           f"actors: try again in a few seconds")
    return daemon


def probe(address: str | None) -> None:
    """Fail fast on a HOST:PORT nobody listens on (ray.init would retry for minutes)."""
    import socket

    if not address or address in ("auto", "local") or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except (OSError, ValueError) as exc:
        raise RayborgError(f"no Ray cluster at {address}: {exc}") from None


def join_ray(address: str | None, daemon, url: str) -> bool:
    """Join the Ray cluster at `address` unless this process is on one already; True when it joined
    here (the caller leaves again on failure). Already on another cluster than the daemon's: an error."""
    import ray

    if not ray.is_initialized():
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        probe(address)
        try:
            ray.init(address=address, log_to_driver=False, logging_level="WARNING")
        except ConnectionError as exc:
            raise RayborgError(f"no Ray cluster at {address!r}: {exc}") from None
        return True
    here = ray.get_runtime_context().gcs_address
    if daemon is not None and here != daemon.ray_address:
        raise RayborgError(f"this process is connected to the Ray cluster at {here}, but the rayborg daemon "
                           f"of database {shown(url)} is on the one at {daemon.ray_address}")
    return False


def check_database(theirs: str, url: str, address: str | None) -> None:
    """The daemon found must use the database asked for, never another one's."""
    from rayborg.store.daemon_lease import same_database

    if not same_database(theirs, url):
        raise RayborgError(f"the rayborg on the Ray cluster at {address} uses database {theirs}, not "
                           f"{shown(url)} (the database of these settings); refusing to act on "
                           f"another daemon (to use that one, name its database: --database-url)")


class Binders:
    """The binder actors of one namespace, looked up once, and calls of their typed methods."""

    def __init__(self, namespace: str):
        self.namespace = namespace
        self._handles: dict[int, Any] = {}

    def handle(self, index: int = 0):
        import ray

        from rayborg.actors.runtime_config import binder_name

        if index not in self._handles:
            try:
                self._handles[index] = ray.get_actor(binder_name(index), namespace=self.namespace)
            except ValueError:
                raise RayborgError(
                    f"no rayborg on this Ray cluster (actor {binder_name(index)} not found in "
                    f"namespace {self.namespace}); start it with `rayborg serve`"
                ) from None
        return self._handles[index]

    def call(self, name: str, *args, index: int = 0, timeout: float = 120, **kwargs) -> Any:
        """Binder `index`'s method `name`, with Ray's and the store's failures as RayborgErrors."""
        import ray

        from rayborg.actors.placement_client import PlacementUnavailable
        from rayborg.store.errors import StoreError

        try:
            return ray.get(getattr(self.handle(index), name).remote(*args, **kwargs), timeout=timeout)
        except ray.exceptions.RayTaskError as exc:
            cause = exc.as_instanceof_cause()
            if isinstance(cause, PlacementUnavailable):
                raise RayborgError(f"{name}: Placement is unavailable, try again: {exc.cause}") from None
            if isinstance(cause, (StoreError, LookupError, ValueError)):
                raise RayborgError(str(exc.cause)) from None
            raise
        except ray.exceptions.RayActorError as exc:
            # The binder died or its node went away: Ray restarts it; the caller may retry.
            self._handles.pop(index, None)
            raise RayborgError(f"{name}: rayborg's binder {index} is unavailable ({type(exc).__name__}), "
                               f"try again") from None
        except ray.exceptions.GetTimeoutError:
            raise RayborgError(
                f"{name}: rayborg's binder {index} did not answer within {timeout:g}s"
            ) from None

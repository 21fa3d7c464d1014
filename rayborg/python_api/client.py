"""`rayborg.connect()`: a handle on a running rayborg for programs on the same Ray cluster.

    import rayborg
    rb = rayborg.connect()          # the daemon of the settings' database, on the Ray cluster it recorded
    rb.devices(family="FPGA", state="free")            # one row per deployable
    results = rb.program("<bitstream>", where={"host": "compute-1"}, parallelism_per_host=4)
    with rb.claim("fpga1", count=2) as claim:          # standalone allocation, recorded in Placement
        print(claim.devices)

Reads and claims go through the typed methods of a Binder actor (next to the database; a claim is
a standalone bind on the binder owning its consumer), programming straight to the hosts' agents. Ray itself has no authentication: everyone on the cluster is trusted, and
`admin=True` is a guard against mistakes (it is what `force=True` requires), not a security boundary.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

from rayborg.python_api.batch import ProgramResult, ProgramResults, result_for, run_batch

SELECTOR_KEYS = {
    "host": "host",
    "hostname": "host",
    "family": "family",
    "type": "family",
    "rc": "resource_class",
    "resource_class": "resource_class",
    "trait": "trait",
    "state": "state",
    "name": "deployable",
    "deployable": "deployable",
    "device": "device_uuid",
    "driver": "driver",
}


log = logging.getLogger("rayborg.claims")


class RayborgError(Exception):
    """A readable error from the Python API (no rayborg running, bad selector, claim refused...)."""


def parse_selector(where: str | dict[str, Any] | Iterable[str] | None) -> dict[str, Any]:
    """`"host=a,family=FPGA"`, a dict with those keys, or a list of deployable names/uuids."""
    if where is None:
        return {}
    if isinstance(where, str):
        out: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in where.split(","))):
            if "=" not in part:
                raise RayborgError(
                    f"bad selector {part!r}: want KEY=VALUE (keys: {', '.join(sorted(SELECTOR_KEYS))})"
                )
            key, value = (x.strip() for x in part.split("=", 1))
            if key.lower() not in SELECTOR_KEYS:
                raise RayborgError(f"unknown selector key {key!r} (keys: {', '.join(sorted(SELECTOR_KEYS))})")
            out.setdefault(SELECTOR_KEYS[key.lower()], set()).update(value.split("|"))
        return out
    if isinstance(where, dict):
        out = {}
        for key, value in where.items():
            if key.lower() not in SELECTOR_KEYS:
                raise RayborgError(f"unknown selector key {key!r} (keys: {', '.join(sorted(SELECTOR_KEYS))})")
            values = {value} if isinstance(value, str) else set(value)
            out.setdefault(SELECTOR_KEYS[key.lower()], set()).update(values)
        return out
    return {"deployable": set(where)}


def matches(row: dict[str, Any], selector: dict[str, Any]) -> bool:
    for key, wanted in selector.items():
        wanted = {str(w) for w in wanted}
        if key == "trait":
            if not wanted <= set(row["traits"]):
                return False
        elif key == "deployable":
            if row["deployable"] not in wanted and row["deployable_uuid"] not in wanted:
                return False
        elif key in ("family", "resource_class", "state", "driver"):
            if str(row.get(key) or "").lower() not in {w.lower() for w in wanted}:
                return False
        elif str(row.get(key)) not in wanted:
            return False
    return True


class Rayborg:
    """A connection to the rayborg actors of one Ray cluster."""

    def __init__(self, namespace: str | None = None, admin: bool = False):
        from rayborg.actors.runtime_config import NAMESPACE

        self.namespace = namespace or NAMESPACE
        self.admin = admin
        self.daemon: dict[str, Any] | None = None  # where `connect` found it (its lease row), if it looked
        self._binders: dict[int, Any] = {}
        self._config = self._call("settings")

    # -- plumbing ------------------------------------------------------------------------------
    def _binder(self, index: int = 0):
        import ray

        from rayborg.actors.runtime_config import binder_name

        if index not in self._binders:
            try:
                self._binders[index] = ray.get_actor(binder_name(index), namespace=self.namespace)
            except ValueError:
                raise RayborgError(
                    f"no rayborg on this Ray cluster (actor {binder_name(index)} not found in "
                    f"namespace {self.namespace}); start it with `rayborg serve`"
                ) from None
        return self._binders[index]

    def _call(self, name: str, *args, index: int = 0, timeout: float = 120, **kwargs) -> Any:
        """Binder `index`'s method `name`, with Ray's and the store's failures as RayborgErrors."""
        import ray

        from rayborg.actors.placement_client import PlacementUnavailable
        from rayborg.store.errors import StoreError

        try:
            return ray.get(getattr(self._binder(index), name).remote(*args, **kwargs), timeout=timeout)
        except ray.exceptions.RayTaskError as exc:
            cause = exc.as_instanceof_cause()
            if isinstance(cause, PlacementUnavailable):
                raise RayborgError(f"{name}: Placement is unavailable, try again: {exc.cause}") from None
            if isinstance(cause, (StoreError, LookupError, ValueError)):
                raise RayborgError(str(exc.cause)) from None
            raise
        except ray.exceptions.RayActorError as exc:
            # The binder died or its node went away: Ray restarts it; the caller may retry.
            self._binders.pop(index, None)
            raise RayborgError(f"{name}: rayborg's binder {index} is unavailable ({type(exc).__name__}), "
                               f"try again") from None
        except ray.exceptions.GetTimeoutError:
            raise RayborgError(
                f"{name}: rayborg's binder {index} did not answer within {timeout:g}s"
            ) from None

    @property
    def config(self) -> dict[str, Any]:
        return dict(self._config)

    # -- reads ---------------------------------------------------------------------------------
    def hosts(self) -> list[dict[str, Any]]:
        """Every host the store knows and every Ray node: state, devices, agent status."""
        import ray

        from rayborg.actors.runtime_config import host_agent_name
        from rayborg.python_api.batch import alive_hosts

        summary = self._call("summary")
        rows = {h["hostname"]: dict(h, devices=0, in_cluster=False, agent=None) for h in summary["hosts"]}
        for dep in self._call("deployables"):
            if dep["host"] in rows:
                rows[dep["host"]]["devices"] += 1
        for host in alive_hosts():
            rows.setdefault(host, {"hostname": host, "state": "up", "devices": 0, "agent": None})[
                "in_cluster"
            ] = True
        refs = {}
        for host in rows:
            try:
                refs[host] = ray.get_actor(host_agent_name(host), namespace=self.namespace).status.remote()
            except ValueError:
                pass
        for host, ref in refs.items():
            try:
                rows[host]["agent"] = ray.get(ref, timeout=5)
            except Exception as exc:  # noqa: BLE001 - its node may be gone
                rows[host]["agent"] = {"error": f"{type(exc).__name__}"}
        return [rows[h] for h in sorted(rows)]

    def devices(
        self,
        family: str | None = None,
        resource_class: str | None = None,
        trait: str | None = None,
        host: str | None = None,
        state: str | None = None,
    ) -> list[dict[str, Any]]:
        """Deployables (the unit Placement schedules and FPGAs are programmed by), with their device.

        `state` is one of free | bound | disabled | lost; `trait` may be a list (all required)."""
        selector = parse_selector(
            {
                k: v
                for k, v in {
                    "family": family,
                    "resource_class": resource_class,
                    "trait": trait,
                    "host": host,
                    "state": state,
                }.items()
                if v is not None
            }
        )
        return [r for r in self._call("deployables") if matches(r, selector)]

    def arqs(self, state: str | None = None, host: str | None = None) -> list[dict[str, Any]]:
        return self._call("arqs", state=state, host=host)

    def host(self, name: str):
        """The HostAgent actor handle of a host (`status`, `sweep`, `program`, ...)."""
        import ray

        from rayborg.actors.runtime_config import host_agent_name

        try:
            return ray.get_actor(host_agent_name(name), namespace=self.namespace)
        except ValueError:
            raise RayborgError(f"no rayborg agent for host {name!r}") from None

    def status(self) -> dict[str, Any]:
        """What `rayborg status` shows: cluster, hosts, devices per family, ARQs per state, sync lag."""
        import ray

        from rayborg.actors.runtime_config import PLACEMENT_SYNC_NAME, binder_name

        summary = self._call("summary")
        actors = {}
        names = [PLACEMENT_SYNC_NAME] + [binder_name(i) for i in range(self._config["binder_count"])]
        for name in names:
            try:
                actors[name] = ray.get(
                    ray.get_actor(name, namespace=self.namespace).status.remote(), timeout=10
                )
            except Exception as exc:  # noqa: BLE001
                actors[name] = {"error": f"{type(exc).__name__}: {exc}"}
        sync = actors.get(PLACEMENT_SYNC_NAME, {})
        last = (sync.get("last_push") or {}).get("at")
        now = time.time()
        nodes = [n for n in ray.nodes() if n["Alive"]]
        return {
            "cluster": {
                "address": ray.get_runtime_context().gcs_address,
                "nodes": len(nodes),
                "cpus": sum(n["Resources"].get("CPU", 0) for n in nodes),
                "namespace": self.namespace,
                "database": self._config["database_url"],
                "placement": self._config["placement_url"],
            },
            "daemon": self.daemon,
            "hosts": self.hosts(),
            "devices": summary["devices"],
            "arqs": summary["arqs"],
            "placement_sync": {
                "dirty_deployables": summary["placement_dirty"],
                "last_push_age_s": None if last is None else round(now - last, 3),
                "lag_s": 0.0 if not summary["placement_dirty"] or last is None else round(now - last, 3),
                "placement_down_since": sync.get("placement_down_since"),
                "reports_applied": sync.get("reports_applied"),
                "errors": [
                    h["hostname"] + ": " + h["sync_error"] for h in summary["hosts"] if h.get("sync_error")
                ],
            },
            "actors": actors,
        }

    # -- enable / disable ----------------------------------------------------------------------
    def enable(self, device: str) -> dict[str, Any]:
        return self._call("set_device_status", device, True)

    def disable(self, device: str) -> dict[str, Any]:
        return self._call("set_device_status", device, False)

    # -- batch programming ---------------------------------------------------------------------
    def select(self, where=None) -> list[dict[str, Any]]:
        selector = parse_selector(where)
        rows = [r for r in self._call("deployables") if matches(r, selector)]
        if not rows:
            raise RayborgError(f"selector {where!r} matched no deployables")
        return rows

    def _plan(self, bitstream: str, where, *, parallelism_per_host: int, parallelism: int, force: bool,
              mine: Iterable[str]) -> tuple[list[dict[str, Any]], list[ProgramResult]]:
        """The deployables to program, and the results of those that will not be (refused, lost,
        or their host's bitstream source does not know the bitstream)."""
        if not bitstream:
            raise RayborgError("a bitstream id is required")
        if force and not self.admin:
            raise RayborgError("force=True needs an admin connection (rayborg.connect(admin=True))")
        if parallelism < 1 or parallelism_per_host < 1:
            raise RayborgError("parallelism and parallelism_per_host must be at least 1")
        mine = {str(m) for m in mine}
        rows = self.select(where)
        # Asked once before the batch, not per device (only sources the binder can reach: Glance).
        unknown = self._call("check_bitstream", bitstream, sorted({r["host"] for r in rows}))
        targets, refused = [], []

        def no(row, status: str, why: str) -> None:
            refused.append(result_for(row, status, why))

        for row in rows:
            others = [h for h in row["holders"] if h["consumer"] not in mine]
            if row["state"] == "lost":
                no(row, "failed", f"host {row['host']} has left the cluster")
            elif others and not force:
                who = ", ".join(f"ARQ {h['arq']} (consumer {h['consumer']})" for h in others)
                no(row, "refused", f"bound to {who}; an admin may force it")
            elif row["host"] in unknown:
                no(row, "failed", unknown[row["host"]])
            else:
                targets.append(row)
        return targets, refused

    def program_iter(
        self,
        bitstream: str,
        where=None,
        *,
        parallelism_per_host: int = 4,
        parallelism: int = 64,
        force: bool = False,
        mine: Iterable[str] = (),
        timeout: float | None = 600.0,
    ) -> Iterator[ProgramResult]:
        """Yield one ProgramResult per selected deployable as the programming calls finish.

        A deployable held by an ARQ is refused unless the ARQ's consumer is in `mine` (e.g. your
        claims' consumers), or `force=True` on an admin connection. Ctrl-C starts nothing new,
        lets the running calls finish (a second Ctrl-C cancels them), yields the remaining devices
        as cancelled and then raises KeyboardInterrupt."""
        return self._batch(bitstream, where, parallelism_per_host=parallelism_per_host,
                           parallelism=parallelism, force=force, mine=mine, timeout=timeout)[0]

    def _batch(self, bitstream, where, *, parallelism_per_host, parallelism, force, mine, timeout, sink=None):
        targets, refused = self._plan(bitstream, where, parallelism_per_host=parallelism_per_host,
                                      parallelism=parallelism, force=force, mine=mine)
        it = run_batch(
            targets,
            bitstream,
            refused=refused,
            parallelism_per_host=parallelism_per_host,
            parallelism=parallelism,
            timeout=timeout,
            namespace=self.namespace,
            sink=sink,
        )
        return it, len(targets) + len(refused)

    def program(
        self,
        bitstream: str,
        where=None,
        *,
        parallelism_per_host: int = 4,
        parallelism: int = 64,
        force: bool = False,
        mine: Iterable[str] = (),
        timeout: float | None = 600.0,
        progress=None,
    ) -> ProgramResults:
        """Program every selected deployable; the per-device results. `progress`: a progress bar
        (None: when stderr is a terminal; or a rich Console to draw it on). After Ctrl-C the
        running calls finish and every device still has a result; `interrupted` is True."""
        results = ProgramResults()
        it, total = self._batch(bitstream, where, parallelism_per_host=parallelism_per_host,
                                parallelism=parallelism, force=force, mine=mine, timeout=timeout,
                                sink=results)
        started = time.perf_counter()
        show = sys.stderr.isatty() if progress is None else progress
        bar = _progress_bar(total, show)
        throw = False  # a Ctrl-C that landed here, owed to the batch
        try:
            while True:
                try:
                    result = it.throw(KeyboardInterrupt) if throw else next(it)
                    throw = False
                    bar.advance(result)
                except StopIteration:
                    break
                except KeyboardInterrupt:
                    results.interrupted = True
                    # Raised by the batch after its last result, or landed in this frame (the bar,
                    # the loop): then the batch is still suspended and gets it, to wind down.
                    if inspect.getgeneratorstate(it) == inspect.GEN_CLOSED:
                        break
                    throw = True
        finally:
            bar.close()
            results.wall_seconds = time.perf_counter() - started
        return results

    # -- standalone allocation -----------------------------------------------------------------
    def claim(
        self,
        profile: str,
        count: int = 1,
        host: str | None = None,
        project_id: str | None = None,
        user_id: str | None = None,
    ) -> Claim:
        """Bind free devices matching a device profile to a new Placement consumer (no Nova).
        Released by `release()`, by leaving a `with` block, or when this Ray job ends."""
        import ray

        from rayborg.store.claims import consumer_uuid, log_fields

        # The consumer names this Ray job (its claims are released when it ends); the binder that
        # owns the consumer binds it, as for any standalone bind.
        consumer = consumer_uuid(ray.get_runtime_context().get_job_id())
        out = self._call("claim", profile, consumer, count=count, host=host, project_id=project_id,
                         user_id=user_id or os.environ.get("USER"), index=self._owner(consumer))
        for d in out["devices"]:
            log.info("claimed for profile %s", profile, extra=log_fields(out["consumer"], d))
        return Claim(self, out)

    def _owner(self, consumer: str) -> int:
        from rayborg.actors.binder import binder_index

        return binder_index(consumer, self._config["binder_count"])

    def release(self, consumer: str) -> dict[str, Any]:
        out = self._call("release", consumer, index=self._owner(consumer))
        for arq in out["released"]:
            log.info("released", extra={"instance": consumer, "arq": arq})
        return out

    def claims(self) -> dict[str, list[str]]:
        return self._call("claims")

    def quota(self, project: str | None = None) -> list[dict[str, Any]]:
        """Quota usage per project (only `project`'s, if given) and resource class: project_id,
        resource, used (Bound), reserved (binds in flight) and limit (-1: unlimited)."""
        return self._call("quota_usage", project)


class Claim:
    """Devices held for this program: `devices` (host, deployable, rp_uuid...), `consumer` (the
    Placement consumer uuid), `arqs`. A context manager; `release()` is idempotent."""

    def __init__(self, conn: Rayborg, data: dict[str, Any]):
        self._conn = conn
        self.consumer: str = data["consumer"]
        self.profile: str = data["profile"]
        self.devices: list[dict[str, Any]] = data["devices"]
        self.arqs: list[str] = [d["arq"] for d in self.devices]
        self.released = False

    def release(self) -> None:
        if not self.released:
            self._conn.release(self.consumer)
            self.released = True

    def program(self, bitstream: str, **kwargs) -> ProgramResults:
        """Program the claimed deployables (they are yours: not refused)."""
        names = sorted({d["deployable"] for d in self.devices})
        return self._conn.program(bitstream, names, mine=[self.consumer], **kwargs)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __repr__(self) -> str:
        where = ", ".join(f"{d['deployable']}@{d['host']}" for d in self.devices)
        return f"Claim({self.consumer}, {self.profile}: {where}{', released' if self.released else ''})"


class _progress_bar:
    def __init__(self, total: int, show):
        self._p = None
        if show:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._p = Progress(
                TextColumn("programming"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[failed]} failed"),
                TimeElapsedColumn(),
                transient=False,
                **({} if isinstance(show, bool) else {"console": show}),
            )
            self._task = self._p.add_task("program", total=total, failed=0)
            self._failed = 0
            self._p.start()

    def advance(self, result: ProgramResult) -> None:
        if self._p is not None:
            self._failed += 0 if result.ok else 1
            self._p.update(self._task, advance=1, failed=self._failed)

    def close(self) -> None:
        if self._p is not None:
            self._p.stop()


_default: Rayborg | None = None


def connect(address: str | None = None, namespace: str | None = None, admin: bool = False,
            database_url: str | None = None) -> Rayborg:
    """A handle on the rayborg daemon of a database: `database_url`, else the one of the settings
    (config file, RAYBORG_* variables). With no `address`, its Ray cluster is the one that daemon's
    `rayborg serve` recorded in that database; with an `address` (HOST:PORT), that cluster. Either way
    the daemon found must use that database: never whatever Ray cluster happens to run on this
    machine. Raises RayborgError when no daemon of that database runs, or the one at `address` uses
    another database."""
    import ray

    global _default
    url = database_url or _settings_database_url()
    daemon = _daemon_of(url) if address is None else None
    if daemon is not None:
        address = daemon.ray_address
    joined = not ray.is_initialized()
    if joined:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        _probe(address)
        try:
            ray.init(address=address, log_to_driver=False, logging_level="WARNING")
        except ConnectionError as exc:
            raise RayborgError(f"no Ray cluster at {address!r}: {exc}") from None
    elif daemon is not None and ray.get_runtime_context().gcs_address != daemon.ray_address:
        raise RayborgError(f"this process is connected to the Ray cluster at "
                           f"{ray.get_runtime_context().gcs_address}, but the rayborg daemon of database "
                           f"{_shown(url)} is on the one at {daemon.ray_address}")
    try:
        conn = Rayborg(namespace=namespace, admin=admin)
        theirs = conn.config["database_url"]
        if not _same_database(theirs, url):
            raise RayborgError(f"the rayborg on the Ray cluster at {address} uses database {theirs}, not "
                               f"{_shown(url)} (the database of these settings); refusing to act on "
                               f"another daemon (to use that one, name its database: --database-url)")
    except BaseException:
        if joined:  # leave no connection to a cluster we refused
            ray.shutdown()
        raise
    conn.daemon = daemon.as_dict() if daemon is not None else None
    _default = conn
    return conn


def _settings_database_url() -> str:
    from rayborg.settings import SettingsError, load_settings

    try:
        return load_settings().database_url
    except SettingsError as exc:
        raise RayborgError(str(exc)) from None


def _shown(url: str) -> str:
    from rayborg.store.urls import shown_url

    return shown_url(url)


def _same_database(a: str, b: str) -> bool:
    from rayborg.store.daemon_lease import same_database

    return same_database(a, b)


def _daemon_of(url: str):
    """The running daemon of the database at `url`, as its lease row records it."""
    from rayborg.store.daemon_lease import RAY_STARTING, find
    from rayborg.store.urls import DatabaseError, error_reason

    try:
        daemon = find(url)
    except DatabaseError as exc:
        raise RayborgError(f"cannot read database {_shown(url)}: {error_reason(exc)}") from None
    if daemon is None:
        raise RayborgError(f"no rayborg daemon runs for database {_shown(url)} (start one with `rayborg "
                           f"serve` with these settings, or name the database and Ray cluster of another)")
    if daemon.ray_address is None:
        raise RayborgError(f"the rayborg daemon of database {_shown(url)} ({daemon.describe()}) runs without "
                           f"actors (--no-actors): it has no Ray cluster to talk to")
    if daemon.ray_address == RAY_STARTING:
        raise RayborgError(f"the rayborg daemon of database {_shown(url)} ({daemon.describe()}) is starting its "
                           f"actors: try again in a few seconds")
    return daemon


def _probe(address: str | None) -> None:
    """Fail fast on a HOST:PORT nobody listens on (ray.init would retry for minutes)."""
    import socket

    if not address or address in ("auto", "local") or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except (OSError, ValueError) as exc:
        raise RayborgError(f"no Ray cluster at {address}: {exc}") from None


def claim(profile: str, count: int = 1, host: str | None = None, **kwargs) -> Claim:
    """`rayborg.connect()` (once) and claim; see `Rayborg.claim`."""
    conn = _default or connect()
    return conn.claim(profile, count=count, host=host, **kwargs)

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

from rayborg.python_api import connection
from rayborg.python_api import status as status_report
from rayborg.python_api.batch import ProgramResult, ProgramResults, result_for, run_batch
from rayborg.python_api.errors import RayborgError
from rayborg.python_api.progress import ProgressBar
from rayborg.python_api.selector import SELECTOR_KEYS, matches, parse_selector

FIRMWARE_TIMEOUT = 1800.0  # an NVM update takes minutes; the driver's own limit applies first

__all__ = ["SELECTOR_KEYS", "Claim", "Rayborg", "RayborgError", "claim", "connect", "matches", "parse_selector"]

log = logging.getLogger("rayborg.claims")


class Rayborg:
    """A connection to the rayborg actors of one Ray cluster."""

    def __init__(self, namespace: str | None = None, admin: bool = False):
        from rayborg.actors.runtime_config import NAMESPACE

        self.namespace = namespace or NAMESPACE
        self.admin = admin
        self.daemon: dict[str, Any] | None = None  # where `connect` found it (its lease row), if it looked
        self._binders = connection.Binders(self.namespace)
        self._config = self._call("settings")

    # -- plumbing ------------------------------------------------------------------------------
    def _call(self, name: str, *args, index: int = 0, timeout: float = 120, **kwargs) -> Any:
        """Binder `index`'s method `name`, with Ray's and the store's failures as RayborgErrors."""
        return self._binders.call(name, *args, index=index, timeout=timeout, **kwargs)

    @property
    def config(self) -> dict[str, Any]:
        return dict(self._config)

    # -- reads ---------------------------------------------------------------------------------
    def hosts(self) -> list[dict[str, Any]]:
        """Every host the store knows and every Ray node: state, devices, agent status."""
        return status_report.hosts(self)

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
        return status_report.status(self)

    # -- enable / disable ----------------------------------------------------------------------
    def enable(self, device: str) -> dict[str, Any]:
        return self._call("set_device_status", device, True)

    def disable(self, device: str, reason: str | None = None) -> dict[str, Any]:
        """Maintenance: nothing binds to the device until `enable`; `reason` is shown with its state."""
        if reason is not None and not (isinstance(reason, str) and 0 < len(reason) <= 255):
            raise RayborgError("a disable reason is 1 to 255 characters")
        return self._call("set_device_status", device, False, reason)

    # -- firmware ------------------------------------------------------------------------------
    def update_firmware(self, device: str, image: str, timeout: float | None = None) -> dict[str, Any]:
        """Flash `image` (a file on the device's host) onto `device` (device uuid, deployable name or
        uuid) with its driver's vendor tool, through the host's agent. Returns the agent's result
        (`ok`, `error`, `duration`) with the device's uuid, host and driver."""
        import ray

        found = [r for r in self.devices() if device in (r["device_uuid"], r["deployable"], r["deployable_uuid"])]
        if not found:
            raise RayborgError(f"no device or deployable {device!r} (see `rayborg devices`)")
        if len({r["device_uuid"] for r in found}) > 1:
            raise RayborgError(f"{device!r} names several devices; give a device uuid")
        target = found[0]
        agent = self.host(target["host"])
        wait = (timeout or FIRMWARE_TIMEOUT) + 60
        result = ray.get(agent.update_firmware.remote(target["driver"], target["deployable"], image, timeout),
                         timeout=wait)
        return {"device_uuid": target["device_uuid"], "host": target["host"], "driver": target["driver"],
                "image": image} | result

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
        bar = ProgressBar(total, show)
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
    url = database_url or connection.settings_database_url()
    daemon = connection.find_daemon(url) if address is None else None
    if daemon is not None:
        address = daemon.ray_address
    joined = connection.join_ray(address, daemon, url)
    try:
        conn = Rayborg(namespace=namespace, admin=admin)
        connection.check_database(conn.config["database_url"], url, address)
    except BaseException:
        if joined:  # leave no connection to a cluster we refused
            ray.shutdown()
        raise
    conn.daemon = daemon.as_dict() if daemon is not None else None
    _default = conn
    return conn


def claim(profile: str, count: int = 1, host: str | None = None, **kwargs) -> Claim:
    """`rayborg.connect()` (once) and claim; see `Rayborg.claim`."""
    conn = _default or connect()
    return conn.claim(profile, count=count, host=host, **kwargs)

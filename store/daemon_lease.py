"""One daemon per database: the lease row `rayborg serve` holds while it runs, and what it records
there for the CLI and the Python API (its Ray cluster, API address, pid, dashboard).

A second daemon on the same database finds a live lease and refuses to start (`DaemonRunning`
names the holder). A dead daemon's lease is taken over: on the machine it ran on at once (its
process is gone, or its pid now belongs to another process), from another machine once its
heartbeat is older than LEASE_SECONDS. It is one plain row changed by conditional UPDATEs, so
SQLite and PostgreSQL behave alike and `rayborg db` and direct store use never wait on it. A daemon
whose heartbeat finds the lease in other hands (it stalled past LEASE_SECONDS, another took over)
must stop.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from sqlalchemy import delete, inspect, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from rayborg.store.engine import Store, normalize_url
from rayborg.store.tables import DaemonLease
from rayborg.store.urls import shown_url  # noqa: F401  (re-exported: shown as the lease records it)

log = logging.getLogger(__name__)
LEASE_NAME = "daemon"
LEASE_SECONDS = 30.0
# Three heartbeats per lease: a write transaction (a sync to disk on SQLite) every 10 s of an idle
# daemon rather than every 5 s, and still two missed beats before another machine may take over.
HEARTBEAT_SECONDS = 10.0
# ray_address while `rayborg serve` is starting Ray and its actors (it answers before they are up).
RAY_STARTING = "starting"


# -- database URLs: which database a daemon uses, shown without its password ---------------------
def absolute_url(url: str) -> str:
    """A SQLite path made absolute (Ray's workers, the CLI and the daemon each have their own
    working directory); any other URL unchanged."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return url
    return u.set(database=str(Path(u.database).resolve())).render_as_string(hide_password=False)


def same_database(a: str, b: str) -> bool:
    """Whether two URLs name one database (driver spelling, password and relative SQLite paths aside)."""

    def key(url: str):
        u = make_url(normalize_url(absolute_url(url)))
        return u._replace(password=None).render_as_string(hide_password=False)  # set() ignores None

    return key(a) == key(b)


# -- this process, as another process on the same machine can check it ---------------------------
def _machine() -> str:
    """The boot and pid namespace a pid belongs to: equal only where `pid` names the same process."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = socket.gethostname()
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return f"{boot} {namespace}".strip()


def _process_start(pid: int) -> str | None:
    """When process `pid` started (Linux: clock ticks since boot), "" where unknown, None when no
    such process runs."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:  # no /proc: whether the pid exists is all we can tell
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return ""
    return stat.rpartition(")")[2].split()[19]  # field 22, starttime (fields after "comm")


@dataclass(frozen=True)
class DaemonRecord:
    """Where a running daemon is (a copy of its lease row)."""

    owner: str
    hostname: str
    machine: str
    pid: int
    process_start: str
    api_host: str
    api_port: int
    ray_address: str | None
    dashboard_url: str | None
    database_url: str
    started_at: float
    heartbeat_at: float

    @classmethod
    def of(cls, row: DaemonLease) -> DaemonRecord:
        return cls(**{k: getattr(row, k) for k in cls.__dataclass_fields__})

    @property
    def api_url(self) -> str:
        host = f"[{self.api_host}]" if ":" in self.api_host else self.api_host
        return f"http://{host}:{self.api_port}"

    def describe(self) -> str:
        """`pid 123 on host db-1, port 6666 (API http://..., Ray 10.0.0.1:6379)`."""
        ray = (", Ray starting" if self.ray_address == RAY_STARTING else
               f", Ray {self.ray_address}" if self.ray_address else ", no Ray: --no-actors")
        return f"pid {self.pid} on host {self.hostname}, port {self.api_port} (API {self.api_url}{ray})"

    def as_dict(self) -> dict:
        out = asdict(self)
        del out["owner"], out["machine"], out["process_start"]
        return out | {"api_url": self.api_url}

    def alive(self, now: float | None = None) -> bool:
        if self.machine == _machine():
            return _process_start(self.pid) == self.process_start
        return (now or time.time()) - self.heartbeat_at <= LEASE_SECONDS


class DaemonRunning(RuntimeError):
    """Another daemon holds the lease of this database."""

    def __init__(self, record: DaemonRecord):
        self.record = record
        super().__init__(f"database {record.database_url} is in use by another rayborg daemon: "
                         f"{record.describe()}; stop it first or use another database")


class _Raced(Exception):
    """Another daemon changed the lease between our read and our write: look again."""


# -- the lease --------------------------------------------------------------------------------------
def acquire(store: Store, *, api_host: str, api_port: int, database_url: str, ray_address: str | None = None,
            dashboard_url: str | None = None) -> Lease:
    """Take this database's lease for this process, or raise DaemonRunning naming its holder. A front
    door that already knows its Ray cluster names it here, so that no reader ever sees the lease
    without it."""
    now = time.time()
    mine = DaemonRecord(owner=str(uuid.uuid4()), hostname=socket.gethostname(), machine=_machine(),
                        pid=os.getpid(), process_start=_process_start(os.getpid()) or "", api_host=api_host,
                        api_port=api_port, ray_address=ray_address, dashboard_url=dashboard_url,
                        database_url=shown_url(database_url), started_at=now, heartbeat_at=now)
    for _ in range(5):
        try:
            store.transact(_take, mine)
            return Lease(store, mine)
        except (IntegrityError, _Raced):  # two daemons at once: one of them wins, the other looks again
            continue
    raise RuntimeError(f"could not take the daemon lease of {mine.database_url}: it kept changing")


def _take(session, mine: DaemonRecord) -> None:
    row = session.scalars(select(DaemonLease).where(DaemonLease.name == LEASE_NAME)).first()
    if row is None:
        session.add(DaemonLease(name=LEASE_NAME, **asdict(mine)))
        return
    held = DaemonRecord.of(row)
    if held.owner != mine.owner and held.alive():
        raise DaemonRunning(held)
    log.warning("taking over the lease of a daemon that is gone: %s", held.describe())
    # Conditional on the dead owner: of two daemons taking it over at once, only one changes it.
    taken = session.execute(update(DaemonLease).where(DaemonLease.name == LEASE_NAME,
                                                      DaemonLease.owner == held.owner).values(**asdict(mine)))
    if taken.rowcount != 1:
        raise _Raced


def _live_row(session) -> DaemonRecord | None:
    row = session.scalars(select(DaemonLease).where(DaemonLease.name == LEASE_NAME)).first()
    record = DaemonRecord.of(row) if row is not None else None
    return record if record is not None and record.alive() else None


def current(store: Store) -> DaemonRecord | None:
    """The daemon running on this database, if any."""
    return store.query(_live_row)


def find(database_url: str) -> DaemonRecord | None:
    """The daemon running on the database at `database_url`, without creating or migrating anything
    (a SQLite file that does not exist, or a database from before leases, has none)."""
    database_url = absolute_url(database_url)
    u = make_url(database_url)
    if u.get_backend_name() == "sqlite" and u.database != ":memory:" and not Path(u.database or "").is_file():
        return None
    store = Store(database_url)
    try:
        if not inspect(store.engine).has_table(DaemonLease.__tablename__):
            return None
        return current(store)
    finally:
        store.dispose()


class Lease:
    """This process's hold on the database: record where it is, keep it alive, give it back."""

    def __init__(self, store: Store, record: DaemonRecord):
        self.store = store
        self.record = record
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _mine(self, session, **values) -> int:
        mine = (DaemonLease.name == LEASE_NAME, DaemonLease.owner == self.record.owner)
        return session.execute(update(DaemonLease).where(*mine).values(**values)).rowcount

    def update(self, **values) -> None:
        """Record more about this daemon (its Ray address and dashboard once Ray is up)."""
        self.store.transact(self._mine, **values)
        self.record = DaemonRecord(**(asdict(self.record) | values))

    def heartbeat(self) -> bool:
        """Whether this process still holds the lease (and now fresher)."""
        return self.store.transact(self._mine, heartbeat_at=time.time()) == 1

    def keep_alive(self, on_lost: Callable[[DaemonRecord | None], None],
                   interval: float = HEARTBEAT_SECONDS) -> None:
        """Heartbeat every `interval` seconds in a thread; `on_lost(new holder)` once it is gone."""

        def beat() -> None:
            while not self._stop.wait(interval):
                try:
                    if self.heartbeat():
                        continue
                    holder = current(self.store)
                except Exception as exc:  # noqa: BLE001 - a database that is down for a while
                    log.warning("daemon lease heartbeat failed: %s", exc)
                    continue
                on_lost(holder)
                return

        self._thread = threading.Thread(target=beat, name="rayborg-lease", daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        mine = (DaemonLease.name == LEASE_NAME, DaemonLease.owner == self.record.owner)
        try:
            self.store.transact(lambda s: s.execute(delete(DaemonLease).where(*mine)))
        except Exception as exc:  # noqa: BLE001 - the next daemon takes the lease over all the same
            log.warning("could not give the daemon lease back: %s", exc)

"""Database engine and sessions for SQLite (embedded default) and PostgreSQL (by URL).

SQLite is shared by several writing processes (front door, PlacementSync, binders), so every
connection runs in WAL mode with foreign keys on and a busy timeout, write transactions take the
write lock up front (`BEGIN IMMEDIATE`) and a transaction that still meets a locked database is
retried as a whole. PostgreSQL needs none of this: its row locks do the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import orjson
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, create_engine
from tenacity import retry, retry_if_exception, stop_after_delay, wait_random_exponential

from rayborg.store.prepared import RawReader

log = logging.getLogger(__name__)
T = TypeVar("T")

SQLITE_BUSY_TIMEOUT_MS = 5000
WRITE_LOCK_FIRST_PAUSE_S = 0.0002
WRITE_LOCK_MAX_PAUSE_S = 0.004


def default_database_url() -> str:
    from platformdirs import user_data_dir

    path = Path(user_data_dir("rayborg")) / "rayborg.db"
    return f"sqlite:///{path}"


def normalize_url(url: str) -> str:
    """Accept plain `postgresql://` URLs and pick the psycopg 3 driver for them."""
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    return u.render_as_string(hide_password=False)


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def _is_sqlite_locked(exc: BaseException) -> bool:
    return isinstance(exc, OperationalError) and "locked" in str(exc.orig).lower()


def _is_retried(exc: BaseException) -> bool:
    """SQLite's lock, or a PostgreSQL deadlock (40P01: group-commit transactions each holding a
    project's quota lock from one savepoint and waiting for another's): the transaction, rolled
    back whole, is run again."""
    cause = getattr(exc, "orig", exc)  # SQLAlchemy's wrapper, or psycopg's own error (prepared reads)
    return _is_sqlite_locked(exc) or getattr(cause, "sqlstate", None) == "40P01"


def _begin_immediate(dbapi_conn) -> None:
    """BEGIN IMMEDIATE, waiting for the write lock in steps of a fraction of a millisecond.

    SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20, 25 ... 100 ms between tries, however soon
    the lock is free: with four processes writing (front doors, binders, PlacementSync) most of a
    bind's latency was that sleep. Once the write lock is held nothing else in the transaction can
    be kept waiting by another writer (WAL), so this is the only wait that needs care."""
    dbapi_conn.execute("PRAGMA busy_timeout=0")
    try:
        deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
        pause = WRITE_LOCK_FIRST_PAUSE_S
        while True:
            try:
                dbapi_conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
            time.sleep(pause * random.uniform(0.5, 1.5))
            pause = min(pause * 1.5, WRITE_LOCK_MAX_PAUSE_S)
    finally:
        dbapi_conn.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")


def make_engine(url: str) -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        db = make_url(url).database
        if db and db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, json_deserializer=orjson.loads,
                               connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):
            # Take transaction control from the driver so that we can say BEGIN IMMEDIATE.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):
            if conn.get_execution_options().get("sqlite_write"):
                _begin_immediate(conn.connection.driver_connection)
            else:
                conn.exec_driver_sql("BEGIN DEFERRED")

        return engine
    return create_engine(url, json_deserializer=orjson.loads, pool_size=10, max_overflow=20, pool_pre_ping=True)


class Store:
    """The one handle on the database: sync sessions for actors and scripts, async wrappers for
    the aiohttp front door (writes, and PostgreSQL reads, run in a thread so that the event loop
    never waits on a lock or the network)."""

    def __init__(self, url: str | None = None, engine: Engine | None = None):
        self.url = normalize_url(url or default_database_url())
        self.engine = engine or make_engine(self.url)
        # SQLite has one writer at a time anyway: threads of this process queue here, on a lock
        # that hands over at once, instead of in SQLite's busy handler, which sleeps 1, 2, 5, 10 ...
        # 100 ms between tries however soon the lock is free (other processes still meet it there).
        self._write_lock = threading.Lock() if self.is_sqlite else contextlib.nullcontext()
        self._groups: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, GroupCommit] = weakref.WeakKeyDictionary()
        self._thread_reader = threading.local()  # see _kept_read
        self._kept_readers: weakref.WeakSet = weakref.WeakSet()

    @property
    def is_sqlite(self) -> bool:
        return is_sqlite(self.engine)

    @contextmanager
    def read(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction, committed on success and rolled back on any exception."""
        bind = self.engine.execution_options(sqlite_write=True) if self.is_sqlite else self.engine
        with self._write_lock, Session(bind, expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def transact(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """Run `fn(session, *args, **kwargs)` in one write transaction, retried as a whole while
        SQLite reports a locked database or PostgreSQL a deadlock (never surfaces as a 500 or a lost
        write)."""

        @retry(retry=retry_if_exception(_is_retried), stop=stop_after_delay(30),
               wait=wait_random_exponential(multiplier=0.005, max=0.2), reraise=True)
        def attempt() -> T:
            with self.write() as session:
                return fn(session, *args, **kwargs)

        return attempt()

    def query(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """Run `fn(session, *args, **kwargs)` in a read-only session; a `@raw_read` function gets a
        `RawReader` on a pooled DBAPI connection instead (`store/prepared.py`)."""
        if getattr(fn, "raw_read", False):
            conn = self.engine.raw_connection()
            try:
                return fn(RawReader(conn, self.engine.dialect), *args, **kwargs)
            finally:
                conn.close()  # back to the pool, which rolls back whatever the read began
        with self.read() as session:
            return fn(session, *args, **kwargs)

    async def atransact(self, fn: Callable[..., T], *args, **kwargs) -> T:
        return await asyncio.to_thread(self.transact, fn, *args, **kwargs)

    async def agroup_transact(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """`atransact` for concurrent callers of one event loop (the front door's requests): the
        calls that arrive while a transaction runs share the next one (group commit), each in a
        savepoint of its own, so that one caller's error undoes only its own changes. On SQLite,
        which has one writer at a time, every commit other writers wait for is latency. On PostgreSQL
        a bind burst's transactions all change one quota counter row, which stays locked from its
        change to the commit: one transaction per request queued them one behind the other on that
        row (and paid a commit each); shared, they take it once (`quotas.defer_moves`)."""
        loop = asyncio.get_running_loop()
        group = self._groups.get(loop)
        if group is None:  # one queue per event loop: a queue must never outlive the loop it waits on
            group = self._groups[loop] = GroupCommit(self)
        return await group.run(fn, *args, **kwargs)

    async def aquery(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """A read for the event loop. On SQLite it runs inline: WAL readers never wait for writers,
        so a read is pure CPU, and the hop to a thread and back cost more (about 40 % of a small
        request's CPU, measured with bench/) than it saved. PostgreSQL reads go over the network:
        those run in a thread."""
        if self.is_sqlite:
            if getattr(fn, "raw_read", False):
                return self._kept_read(fn, *args, **kwargs)
            return self.query(fn, *args, **kwargs)
        return await asyncio.to_thread(self.query, fn, *args, **kwargs)

    def _kept_read(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """A `@raw_read` on a SQLite connection this thread keeps: a pool checkout and its
        reset-on-return cost about twice the read itself (21 of 32 us showing one ARQ). Nothing is
        held between reads: the connections run without implicit transactions
        (isolation_level=None), so each SELECT sees the latest commit and no snapshot pins the WAL.
        The connection is detached from the pool: it takes no pool slot, and it is closed when its
        thread ends (the thread-local goes) or at `dispose`."""
        conn = getattr(self._thread_reader, "conn", None)
        if conn is None:
            conn = self._thread_reader.conn = self.engine.raw_connection()
            conn.detach()
            self._kept_readers.add(conn)
        try:
            return fn(RawReader(conn, self.engine.dialect), *args, **kwargs)
        except sqlite3.Error:
            self._thread_reader.conn = None  # a connection in doubt is not used again
            self._kept_readers.discard(conn)
            conn.invalidate()
            raise

    def dispose(self) -> None:
        for conn in list(self._kept_readers):
            with contextlib.suppress(Exception):
                conn.close()
        self._kept_readers = weakref.WeakSet()
        self._thread_reader = threading.local()
        self.engine.dispose()


GROUP_MAX = 64  # calls in one group-commit transaction at most
# Group transactions of one event loop in flight at once on PostgreSQL (SQLite: one writer, 1): a
# second one runs its statements while the first waits for its commit. More buys nothing in a bind
# burst, where every group ends on the same quota counter rows (`quotas.defer_moves`), so that their
# commits queue there one behind the other, and splits the queue into smaller groups.
PG_GROUPS_IN_FLIGHT = 2


class GroupCommit:
    """Runs queued write calls in shared transactions, one transaction in flight at a time (SQLite
    allows no more), each call in a savepoint: its exception reaches only its caller, its changes are
    undone alone, and the others commit. The identity map is emptied between calls, so that no call
    sees another's objects as they were before that call's own statements ran."""

    def __init__(self, store: Store):
        self.store = store
        self._queue: list[tuple[Callable, tuple, dict, asyncio.Future]] = []
        self._draining = 0  # transactions in flight
        self._in_flight = 1 if store.is_sqlite else PG_GROUPS_IN_FLIGHT

    async def run(self, fn: Callable[..., T], *args, **kwargs) -> T:
        fut = asyncio.get_running_loop().create_future()
        self._queue.append((fn, args, kwargs, fut))
        if self._draining < self._in_flight:
            self._draining += 1
            asyncio.get_running_loop().create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[:GROUP_MAX], self._queue[GROUP_MAX:]
                try:
                    outcomes = await asyncio.to_thread(self.store.transact, _each_in_savepoint,
                                                       [(fn, args, kwargs) for fn, args, kwargs, _ in batch])
                except BaseException as exc:  # the transaction itself failed: every call in it did
                    outcomes = [(False, exc)] * len(batch)
                for (*_, fut), (ok, value) in zip(batch, outcomes):
                    if fut.done():  # the caller went away (request cancelled)
                        continue
                    if ok:
                        fut.set_result(value)
                    else:
                        fut.set_exception(value)
        finally:
            self._draining -= 1


def _each_in_savepoint(session: Session, calls: list[tuple[Callable, tuple, dict]]) -> list[tuple[bool, object]]:
    from rayborg.store import quotas

    quotas.defer_moves(session)
    outcomes: list[tuple[bool, object]] = []
    if len(calls) == 1:  # alone: no savepoint (two round trips on PostgreSQL); its error undoes all
        fn, args, kwargs = calls[0]
        outcomes.append((True, fn(session, *args, **kwargs)))
    else:
        for fn, args, kwargs in calls:
            kept = quotas.kept_moves(session)
            try:
                with session.begin_nested():
                    outcomes.append((True, fn(session, *args, **kwargs)))
            except Exception as exc:  # noqa: BLE001 - delivered to the caller it belongs to
                if _is_retried(exc):
                    raise  # the whole transaction is retried (Store.transact)
                quotas.restore_moves(session, kept)
                outcomes.append((False, exc))
            finally:
                session.expunge_all()
    quotas.flush_moves(session)
    return outcomes

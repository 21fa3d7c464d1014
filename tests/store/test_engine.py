"""Store robustness: SQLite pragmas on every connection, a locked database never surfacing from
`Store.transact` even with several writing processes, whole-transaction rollback, and plain
`postgresql://` URLs."""

from __future__ import annotations

import multiprocessing
from contextlib import ExitStack

import pytest
from sqlalchemy import func, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import select

from rayborg.store.engine import Store, normalize_url
from rayborg.store.migrate import current, head, upgrade
from rayborg.store.tables import Device

WORKERS = 4
WRITES = 200


def _device(key: str) -> Device:
    return Device(type="FPGA", vendor="0x8086", model="m", hostname="race", std_board_info_key=key)


def _pragmas(conn) -> tuple:
    return tuple(conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                 for name in ("journal_mode", "foreign_keys", "busy_timeout"))


def test_sqlite_pragmas_hold_on_every_pooled_connection(sqlite_url):
    store = Store(sqlite_url)
    with ExitStack() as stack:  # several connections open at once: each is a fresh DB-API connection
        conns = [stack.enter_context(store.engine.connect()) for _ in range(3)]
        assert {_pragmas(c) for c in conns} == {("wal", 1, 5000)}
    store.dispose()


def test_sqlite_enforces_foreign_keys(sqlite_url):
    store = Store(sqlite_url)
    upgrade(store.engine)
    with pytest.raises(IntegrityError):
        store.transact(lambda s: s.execute(text(
            "INSERT INTO attributes (uuid, deployable_id, key, value, created_at) "
            "VALUES ('a', 424242, 'k', 'v', CURRENT_TIMESTAMP)")))
    store.dispose()


def test_failed_transaction_leaves_nothing_behind(database_url):
    store = Store(database_url)
    upgrade(store.engine)

    def half_then_fail(session):
        session.add(_device("half"))
        session.flush()
        raise ValueError("boom")

    with pytest.raises(ValueError):
        store.transact(half_then_fail)
    assert store.query(lambda s: s.exec(select(func.count()).select_from(Device)).one()) == 0
    store.dispose()


def test_transact_retries_the_whole_transaction_on_a_locked_database(sqlite_url):
    store = Store(sqlite_url)
    upgrade(store.engine)
    calls = []

    def flaky(session):
        calls.append(1)
        session.add(_device(f"try{len(calls)}"))
        session.flush()
        if len(calls) < 3:
            raise OperationalError("INSERT", {}, Exception("database is locked"))
        return len(calls)

    assert store.transact(flaky) == 3
    # Only the attempt that committed left a row.
    assert store.query(lambda s: s.exec(select(Device.std_board_info_key)).all()) == ["try3"]
    store.dispose()


def test_other_errors_are_not_retried(sqlite_url):
    store = Store(sqlite_url)
    calls = []

    def broken(session):
        calls.append(1)
        raise OperationalError("SELECT", {}, Exception("no such table: nope"))

    with pytest.raises(OperationalError):
        store.transact(broken)
    assert len(calls) == 1
    store.dispose()


def _next_device(session) -> None:
    # Read, then write what was read: two interleaved writers would pick the same key and hit the
    # unique constraint, so success proves the transactions ran one after the other.
    n = session.exec(select(func.count()).select_from(Device)).one()
    session.add(_device(f"n{n}"))


def _writer(url: str) -> int:
    store = Store(url)
    for _ in range(WRITES):
        store.transact(_next_device)
    store.dispose()
    return WRITES


def test_concurrent_writers_never_see_a_locked_database(sqlite_url):
    upgrade(sqlite_url)
    with multiprocessing.get_context("spawn").Pool(WORKERS) as pool:
        assert pool.map(_writer, [sqlite_url] * WORKERS) == [WRITES] * WORKERS
    store = Store(sqlite_url)
    keys = store.query(lambda s: set(s.exec(select(Device.std_board_info_key)).all()))
    assert keys == {f"n{i}" for i in range(WORKERS * WRITES)}
    store.dispose()


@pytest.mark.parametrize("given, expected", [
    ("postgresql://u:p@db:5432/rayborg", "postgresql+psycopg://u:p@db:5432/rayborg"),
    ("postgres://u@db/rayborg", "postgresql+psycopg://u@db/rayborg"),
    ("postgresql+psycopg://u@db/rayborg", "postgresql+psycopg://u@db/rayborg"),
    ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
])
def test_normalize_url(given, expected):
    assert normalize_url(given) == expected


@pytest.mark.postgres
def test_plain_postgresql_url_works(postgres_server):
    url = postgres_server.create_database().replace("postgresql+psycopg://", "postgresql://", 1)
    store = Store(url)
    assert store.engine.dialect.driver == "psycopg"
    assert upgrade(url) == head() == current(url)
    store.transact(lambda s: s.add(_device("pg")))
    assert store.query(lambda s: s.exec(select(Device.std_board_info_key)).all()) == ["pg"]
    store.dispose()


async def test_event_loop_reads_keep_one_sqlite_connection_and_see_every_commit(sqlite_url):
    import asyncio
    import gc
    import threading

    from sqlalchemy import event
    from sqlalchemy import select as sa_select

    from rayborg.store.prepared import Prepared, raw_read

    store = Store(sqlite_url)
    upgrade(store.engine)
    count = Prepared(sa_select(func.count()).select_from(Device))
    checkouts = []
    event.listen(store.engine, "checkout", lambda conn, _record, _proxy: checkouts.append(conn))

    @raw_read
    def devices(reader) -> int:
        return reader.all(count)[0][0]

    def add(session, key):
        session.add(_device(key))

    assert await store.aquery(devices) == 0
    store.transact(add, "k0")
    checkouts.clear()
    for i in range(1, 21):  # each commit, from another connection, is seen by the next read: no stale snapshot
        store.transact(add, f"k{i}")
        assert await store.aquery(devices) == i + 1
    assert len(checkouts) == 20  # the writes' only: the kept connection served every read
    assert store.engine.pool.checkedout() == 0  # and it holds no pool slot
    with store.engine.connect() as conn:  # nor a WAL snapshot: a full checkpoint completes
        assert conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()[0] == 0

    @raw_read
    def broken(reader):
        return reader.all(Prepared(sa_select(text("no_such_column")).select_from(Device)))

    with pytest.raises(Exception, match="no_such_column"):
        await store.aquery(broken)
    assert len(store._kept_readers) == 0  # a connection that failed is dropped, not kept
    assert await store.aquery(devices) == 21

    # Threads that come and go (each with its own loop) leave no connection behind.
    threads = [threading.Thread(target=lambda: asyncio.run(store.aquery(devices))) for _ in range(40)]
    for t in threads:
        t.start()
        t.join()
    gc.collect()
    assert len(store._kept_readers) == 1 and store.engine.pool.checkedout() == 0  # only this thread's
    store.dispose()
    assert len(store._kept_readers) == 0

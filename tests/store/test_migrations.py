"""Alembic migrations: create the schema on both databases, match the models exactly, are idempotent,
and survive several processes upgrading one fresh SQLite file at once."""

import multiprocessing

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlmodel import SQLModel

from rayborg.cli import main as cli
from rayborg.store.engine import make_engine
from rayborg.store.migrate import current, head, upgrade


def test_upgrade_creates_the_models_schema_exactly(database_url):
    engine = make_engine(database_url)
    assert current(engine) is None
    assert upgrade(engine) == head()
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, SQLModel.metadata)
    assert diff == []
    assert {"devices", "deployables", "attach_handles", "extended_accelerator_requests", "hosts"} <= set(
        inspect(engine).get_table_names())
    assert upgrade(engine) == head()  # idempotent
    engine.dispose()


def _upgrade(url: str) -> str:
    return upgrade(url)


def test_concurrent_upgrades_of_one_fresh_database(database_url):
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        assert pool.map(_upgrade, [database_url] * 3) == [head()] * 3


def test_db_commands(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    assert cli(["db", "current", "--database-url", url]) == 0
    assert "none" in capsys.readouterr().out
    assert cli(["db", "upgrade", "--database-url", url]) == 0
    assert head() in capsys.readouterr().out
    assert cli(["db", "current", "--database-url", url]) == 0
    assert head() in capsys.readouterr().out


def test_every_constraint_is_named_by_convention(database_url):
    engine = make_engine(database_url)
    upgrade(engine)
    insp = inspect(engine)
    for table in insp.get_table_names():
        if table == "alembic_version":
            continue
        names = [fk["name"] for fk in insp.get_foreign_keys(table)]
        names += [uq["name"] for uq in insp.get_unique_constraints(table)]
        if engine.dialect.name == "postgresql":  # SQLite does not keep a primary key's name
            names.append(insp.get_pk_constraint(table)["name"])
        assert all(n and n.split("_")[0] in ("fk", "uq", "pk") for n in names), (table, names)
    engine.dispose()


def test_sqlite_migrations_run_without_foreign_keys_and_restore_them(sqlite_url, monkeypatch):
    # A batch-mode table rebuild drops the old table: with foreign keys on it would cascade.
    seen = []
    real = command.upgrade

    def spy(cfg, revision):
        seen.append(cfg.attributes["connection"].exec_driver_sql("PRAGMA foreign_keys").scalar())
        real(cfg, revision)

    monkeypatch.setattr(command, "upgrade", spy)
    engine = make_engine(sqlite_url)
    upgrade(engine)
    assert seen == [0]
    with engine.connect() as conn:  # the pooled connection the migration used has them back
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()


def test_upgrade_from_0001_keeps_the_rows_and_adds_standalone(database_url):
    """A database made by 0001, with a device tree, a profile and a bound ARQ in it, upgrades to
    head: every row is kept (SQLite rebuilds the ARQ table in batch mode), the ARQs are not
    standalone, and the new outbox table works."""
    from sqlalchemy import text

    engine = make_engine(database_url)
    assert upgrade(engine, "0001") == "0001"
    now = "2026-11-25 00:00:00+00:00"
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO device_profiles (id, uuid, name, groups, created_at) "
                          "VALUES (1, 'p-1', 'dp', '[{\"resources:FPGA\": \"1\"}]', :now)"), {"now": now})
        conn.execute(text(
            "INSERT INTO extended_accelerator_requests (id, uuid, state, device_profile_id, "
            "device_profile_group_id, hostname, instance_uuid, nova_event_pending, created_at) "
            "VALUES (1, 'a-1', 'Bound', 1, 0, 'host1', 'i-1', :f, :now), "
            "(2, 'a-2', 'Initial', 1, 0, NULL, NULL, :f, :now)"), {"now": now, "f": False})
    assert upgrade(engine) == head()
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT uuid, state, instance_uuid, standalone FROM "
                                 "extended_accelerator_requests ORDER BY id")).all()
        assert [(u, s, i, bool(st)) for u, s, i, st in rows] == [
            ("a-1", "Bound", "i-1", False), ("a-2", "Initial", None, False)]
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), SQLModel.metadata)
    assert diff == []
    from rayborg.store import standalone_allocations
    from rayborg.store.engine import Store

    store = Store(database_url, engine=engine)
    store.transact(standalone_allocations.mark, ["i-1"])
    assert store.query(standalone_allocations.dirty) == ["i-1"]
    engine.dispose()

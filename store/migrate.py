"""Schema migrations (Alembic): `upgrade` brings any database to the newest schema.

Run by `rayborg db upgrade` and at every `rayborg serve` start. The Alembic configuration is built
in code, so nothing but this package is needed at run time. Several processes may start at once on
one fresh database: on SQLite the upgrade runs under the database's write lock, on PostgreSQL under
an advisory lock, so only one of them migrates and the others find the work done.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_PG_LOCK_KEY = 0x72617962  # "rayb"


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def _engine(url_or_engine) -> tuple[Engine, bool]:
    if isinstance(url_or_engine, Engine):
        return url_or_engine, False
    from rayborg.store.engine import make_engine

    return make_engine(url_or_engine), True


def head() -> str:
    return ScriptDirectory.from_config(_config()).get_current_head()


def current(url_or_engine) -> str | None:
    engine, owned = _engine(url_or_engine)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        if owned:
            engine.dispose()


def _upgrade_sqlite(engine: Engine, cfg: Config, revision: str) -> None:
    with engine.connect().execution_options(sqlite_write=True) as conn:
        # Batch mode rebuilds a table by copy, drop and rename; with foreign keys on, that drop
        # would cascade into the child tables. The pragma only changes outside a transaction.
        raw = conn.connection.driver_connection  # outside SQLAlchemy's autobegun transaction
        raw.execute("PRAGMA foreign_keys=OFF")
        try:
            with conn.begin():  # BEGIN IMMEDIATE: one migrator at a time
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
                broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"migration to {revision} left dangling foreign keys: {broken[:5]}")
        finally:
            raw.execute("PRAGMA foreign_keys=ON")


def upgrade(url_or_engine, revision: str = "head") -> str | None:
    """Migrate to `revision`; returns the revision the database is at afterwards."""
    engine, owned = _engine(url_or_engine)
    cfg = _config()
    try:
        if engine.dialect.name == "sqlite":
            _upgrade_sqlite(engine, cfg, revision)
        else:
            with engine.begin() as conn:
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
        return current(engine)
    finally:
        if owned:
            engine.dispose()

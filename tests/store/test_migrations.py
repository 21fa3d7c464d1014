"""Alembic migrations: create the schema on both databases, match the models exactly, are idempotent,
and survive several processes upgrading one fresh SQLite file at once."""

import multiprocessing

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
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), SQLModel.metadata)
    assert diff == []
    assert {"devices", "deployables", "attach_handles", "extended_accelerator_requests", "hosts"} <= set(
        inspect(engine).get_table_names())
    assert upgrade(engine) == head()  # idempotent
    engine.dispose()


def _upgrade(url: str) -> str:
    return upgrade(url)


def test_concurrent_upgrades_of_one_fresh_sqlite_file(tmp_path):
    url = f"sqlite:///{tmp_path / 'race.db'}"
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        assert pool.map(_upgrade, [url] * 3) == [head()] * 3


def test_db_commands(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    assert cli(["db", "current", "--database-url", url]) == 0
    assert "none" in capsys.readouterr().out
    assert cli(["db", "upgrade", "--database-url", url]) == 0
    assert head() in capsys.readouterr().out
    assert cli(["db", "current", "--database-url", url]) == 0
    assert head() in capsys.readouterr().out

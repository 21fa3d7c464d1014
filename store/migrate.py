"""PLACEHOLDER until the Alembic migrations land: create the schema from the tables."""

from __future__ import annotations

from sqlmodel import SQLModel

import rayborg.store.tables  # noqa: F401  (registers the tables)


def upgrade(url_or_engine) -> None:
    from sqlalchemy.engine import Engine

    from rayborg.store.engine import make_engine

    engine = url_or_engine if isinstance(url_or_engine, Engine) else make_engine(url_or_engine)
    SQLModel.metadata.create_all(engine)

"""Prepared reads: a SELECT compiled once per database dialect and run on a raw DBAPI cursor.

The API's hot reads (show one ARQ, list ARQs, devices, profiles) are one small SELECT each, yet an
ORM Session around them (checkout, BEGIN, statement cache key, result objects, rollback) cost ten
times what SQLite needed to answer them: three quarters of a small request's CPU, measured with
bench/. A `Prepared` keeps the statement as SQLAlchemy Core (so it stays portable and typed),
renders its SQL once per dialect, and converts results with SQLAlchemy's own result processors
(SQLite's datetime strings and JSON text come back as datetime and dict, as through the ORM).

A function decorated `@raw_read` gets a `RawReader` instead of a Session from `Store.query`; it
must only read. Statements with `IN` lists of varying length are not preparable: keep those on
the Session path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.engine import Dialect
from sqlalchemy.sql import Select

F = TypeVar("F", bound=Callable[..., Any])


class _Compiled:
    __slots__ = ("sql", "defaults", "order", "processors")

    def __init__(self, stmt: Select, dialect: Dialect):
        compiled = stmt.compile(dialect=dialect)
        self.sql = str(compiled)
        # The statement's own literals (e.g. a state in a join condition) are bind values too.
        self.defaults = {name: bind.value for name, bind in compiled.binds.items() if not bind.required}
        self.order = compiled.positiontup if dialect.positional else None
        processors = [col.type.dialect_impl(dialect).result_processor(dialect, None)
                      for col in stmt.selected_columns]
        # Only the columns that need converting are visited per row (most are plain text).
        self.processors = [(i, p) for i, p in enumerate(processors) if p is not None]


class Prepared:
    """One SELECT whose bind parameters (`bindparam("name")`) are given at run time."""

    def __init__(self, stmt: Select):
        self.stmt = stmt
        self._compiled: dict[str, _Compiled] = {}

    def compiled(self, dialect: Dialect) -> _Compiled:
        found = self._compiled.get(dialect.name)
        if found is None:
            found = self._compiled[dialect.name] = _Compiled(self.stmt, dialect)
        return found


class RawReader:
    """Runs `Prepared` statements on one pooled DBAPI connection."""

    def __init__(self, dbapi_connection, dialect: Dialect):
        self._conn = dbapi_connection
        self._dialect = dialect

    def all(self, prepared: Prepared, **params: Any) -> list[tuple]:
        c = prepared.compiled(self._dialect)
        values = {**c.defaults, **params}
        args = tuple(values[name] for name in c.order) if c.order is not None else values
        cur = self._conn.cursor()
        try:
            cur.execute(c.sql, args)
            rows = cur.fetchall()
        finally:
            cur.close()
        procs = c.processors
        if not procs:
            return [tuple(r) for r in rows]
        out = []
        for row in rows:
            row = list(row)
            for i, convert in procs:
                if row[i] is not None:
                    row[i] = convert(row[i])
            out.append(tuple(row))
        return out


def raw_read(fn: F) -> F:
    """Mark a read-only store function that takes a `RawReader` (see the module docstring)."""
    fn.raw_read = True  # type: ignore[attr-defined]
    return fn

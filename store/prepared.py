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

`Prepared(stmt, iso_datetimes=True)` hands DateTime columns back as the API prints them
(`2020-03-13T02:26:31+00:00`, UTC, whole seconds) instead of as datetimes: on SQLite straight from
the stored text by slicing, without building a datetime per row (a list of 1,000 ARQs converted
2,000 of them, then formatted each back to text).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, TypeVar

from sqlalchemy import DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import Select

F = TypeVar("F", bound=Callable[..., Any])


class _Compiled:
    __slots__ = ("sql", "defaults", "order", "processors")

    def __init__(self, stmt: Select, dialect: Dialect, iso_datetimes: bool = False):
        compiled = stmt.compile(dialect=dialect)
        self.sql = str(compiled)
        # The statement's own literals (e.g. a state in a join condition) are bind values too.
        self.defaults = {name: bind.value for name, bind in compiled.binds.items() if not bind.required}
        self.order = compiled.positiontup if dialect.positional else None
        processors = [_iso_processor(col.type.dialect_impl(dialect).result_processor(dialect, None))
                      if iso_datetimes and isinstance(col.type, DateTime)
                      else col.type.dialect_impl(dialect).result_processor(dialect, None)
                      for col in stmt.selected_columns]
        # Only the columns that need converting are visited per row (most are plain text).
        self.processors = [(i, p) for i, p in enumerate(processors) if p is not None]


def iso_text(value: datetime) -> str:
    """A datetime as the API prints it: UTC with offset, whole seconds (naive means UTC)."""
    if value.tzinfo is None:
        return value.isoformat(timespec="seconds") + "+00:00"
    return value.astimezone(timezone.utc).isoformat(timespec="seconds")


def _iso_processor(to_datetime: Callable[[Any], Any] | None) -> Callable[[Any], str]:
    """A result processor giving `iso_text` of a DateTime column's value. SQLite stores UTC as
    `YYYY-MM-DD HH:MM:SS[.ffffff]`: sliced into shape; anything else goes through a datetime."""

    def convert(value: Any) -> str:
        if type(value) is str and len(value) >= 19 and value[10] == " " and (len(value) == 19 or value[19] == "."):
            return f"{value[:10]}T{value[11:19]}+00:00"
        if to_datetime is not None and not isinstance(value, datetime):
            value = to_datetime(value)
        return iso_text(value)

    return convert


class Prepared:
    """One SELECT whose bind parameters (`bindparam("name")`) are given at run time; with
    `iso_datetimes`, its DateTime columns come back as ISO text (see the module docstring)."""

    def __init__(self, stmt: Select, iso_datetimes: bool = False):
        self.stmt = stmt
        self.iso_datetimes = iso_datetimes
        self._compiled: dict[str, _Compiled] = {}

    def compiled(self, dialect: Dialect) -> _Compiled:
        found = self._compiled.get(dialect.name)
        if found is None:
            found = self._compiled[dialect.name] = _Compiled(self.stmt, dialect, self.iso_datetimes)
        return found


class RawReader:
    """Runs `Prepared` statements on one pooled DBAPI connection."""

    def __init__(self, dbapi_connection, dialect: Dialect):
        # The driver's own connection under the pool's wrapper (whose cursor() only forwards to it);
        # the wrapper stays the caller's to close or give back.
        self._conn = getattr(dbapi_connection, "dbapi_connection", None) or dbapi_connection
        self._dialect = dialect

    def all(self, prepared: Prepared, **params: Any) -> list[tuple]:
        c = prepared._compiled.get(self._dialect.name) or prepared.compiled(self._dialect)
        if c.order is not None:  # positional (SQLite): the values in the statement's order
            defaults = c.defaults
            args: Any = tuple(params[name] if name in params else defaults[name] for name in c.order)
        else:
            args = {**c.defaults, **params}
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

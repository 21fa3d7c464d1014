"""Database URLs and connection errors as the rest of rayborg sees them: settings, serve, the CLI and the
Python API parse, show and report databases through here, so that no module outside store/ imports
SQLAlchemy (tests/test_import_rules.py)."""

from __future__ import annotations

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

# What `except DatabaseError` catches: the driver could not reach or read the database.
DatabaseError = DBAPIError


def backend_name(url: str) -> str:
    """`sqlite`, `postgresql`, ...; ValueError for a string that is no database URL."""
    try:
        return make_url(url).get_backend_name()
    except ArgumentError:
        raise ValueError(f"not a database URL: {url!r}") from None


def shown_url(url: str) -> str:
    """The URL as logs and messages show it: without its password."""
    return make_url(url).render_as_string(hide_password=True)


def error_reason(exc: DBAPIError) -> str:
    """The first line of what the database driver said."""
    return str(exc.orig or exc).strip().splitlines()[0]

"""`rayborg db upgrade|current`: schema migrations of the store."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager



def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("db", help="migrate the database schema",
                            description="Schema migrations of rayborg's database. `rayborg serve` runs "
                                        "`upgrade` itself at every start.")
    actions = parser.add_subparsers(dest="db_action", metavar="ACTION", required=True)
    for name, text in (("upgrade", "bring the database to the newest schema"),
                       ("current", "print the schema revision the database is at")):
        p = actions.add_parser(name, help=text, description=text)
        p.add_argument("--database-url",
                       help="SQLAlchemy URL (default: from the settings, else rayborg.db in the "
                            "user's data directory)")
        p.set_defaults(func=run)


@contextmanager
def database_errors(url: str) -> Iterator[None]:
    """An unreachable or unreadable database is one readable line, not a traceback."""
    from rayborg.cli import CLIError
    from rayborg.store.urls import DatabaseError, error_reason, shown_url

    try:
        yield
    except DatabaseError as exc:
        raise CLIError(f"database {shown_url(url)}: {error_reason(exc)}") from None


def run(args: argparse.Namespace) -> int:
    from rayborg.cli import CLIError
    from rayborg.settings import SettingsError, load_settings
    from rayborg.store.migrate import current, head, upgrade

    try:
        url = load_settings(database_url=args.database_url).database_url
    except SettingsError as exc:
        raise CLIError(str(exc)) from None
    from rayborg.store.urls import shown_url

    shown = shown_url(url)
    with database_errors(url):
        revision = upgrade(url) if args.db_action == "upgrade" else current(url)
    print(f"{shown}: at revision {revision or 'none (empty database)'} (head {head()})")
    return 0

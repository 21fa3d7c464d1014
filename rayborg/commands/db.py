"""`rayborg db upgrade|current`: schema migrations of the store."""

from __future__ import annotations

import argparse

from sqlalchemy.engine import make_url


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("db", help="migrate the database schema",
                            description="Schema migrations of rayborg's database. `rayborg serve` runs "
                                        "`upgrade` itself at every start.")
    actions = parser.add_subparsers(dest="db_action", metavar="ACTION", required=True)
    for name, text in (("upgrade", "bring the database to the newest schema"),
                       ("current", "print the schema revision the database is at")):
        p = actions.add_parser(name, help=text, description=text)
        p.add_argument("--database-url", help="SQLAlchemy URL (default: settings, else the SQLite file in the "
                                              "user's data directory)")
        p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rayborg.settings import load_settings
    from rayborg.store.migrate import current, head, upgrade

    url = load_settings(database_url=args.database_url).database_url
    shown = make_url(url).render_as_string(hide_password=True)
    if args.db_action == "upgrade":
        print(f"{shown}: at revision {upgrade(url)} (head {head()})")
    else:
        print(f"{shown}: at revision {current(url) or 'none (empty database)'} (head {head()})")
    return 0

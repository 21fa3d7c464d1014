"""`rayborg quota [--project P] [--json]`: quota usage and limits per project and resource class,
read from the database of the settings (no daemon needed), with the limits a bind is checked
against: the [quota] table, or Keystone's unified limits (keystone mode, [unified_limits] enabled)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quota", help="show quota usage and limits per project and resource class",
                       description="Units each project holds per resource class: used (Bound), reserved "
                                   "(binds in flight) and the limit (-1: unlimited) of the [quota] "
                                   "settings, or of Keystone's unified limits in keystone mode with "
                                   "[unified_limits] enabled. Read from the database.")
    p.add_argument("--project",
                   help="only this project (and the classes it has a limit for but holds none of)")
    p.add_argument("--database-url",
                   help="SQLAlchemy URL (default: from the settings, else rayborg.db in the user's data "
                        "directory)")
    p.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rayborg.api import quota_limits
    from rayborg.cli import CLIError
    from rayborg.commands.db import database_errors
    from rayborg.commands.ops import _print_json, _table
    from rayborg.settings import SettingsError, load_settings
    from rayborg.store import quotas
    from rayborg.store.engine import Store

    try:
        settings = load_settings(database_url=args.database_url)
    except SettingsError as exc:
        raise CLIError(str(exc)) from None
    store = Store(settings.database_url)
    try:
        with database_errors(settings.database_url):
            rows = store.query(quotas.report, quota_limits.limits(None, settings), args.project)
    finally:
        store.dispose()
    if args.json:
        _print_json(rows)
    else:
        _table("Quota usage", ["project", "resource", "used", "reserved", "limit"],
               [[r["project_id"], r["resource"], r["used"], r["reserved"],
                 "unlimited" if r["limit"] == quotas.UNLIMITED else r["limit"]] for r in rows])
    return 0

"""The `rayborg` command: one sub-command per module in `rayborg/commands/`."""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

import rayborg.commands as commands_pkg
from rayborg import __version__


class CLIError(Exception):
    """An error to print as one readable line (exit code 1), not a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rayborg",
        description="rayborg: accelerator management (OpenStack Cyborg v2 API) on Ray. "
                    "Run 'rayborg COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"rayborg {__version__}")
    parser.add_argument("--config", metavar="FILE",
                        help="TOML config file (default: $RAYBORG_CONFIG or the user's config dir)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(commands_pkg.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands_pkg.__name__}.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config:
        import os

        os.environ["RAYBORG_CONFIG"] = args.config
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except CLIError as exc:
        print(f"rayborg {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"rayborg {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

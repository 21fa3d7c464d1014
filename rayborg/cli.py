"""The `rayborg` command: one sub-command per module in `rayborg/commands/`."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys
import traceback

import rayborg.commands as commands_pkg
from rayborg import __version__


class CLIError(Exception):
    """An error to print as one readable line (exit code 1), not a traceback."""


def _add_logging_options(p: argparse.ArgumentParser, default) -> None:
    p.add_argument("-v", "--verbose", action="store_true", default=default,
                   help="log debug messages; print the traceback of an unexpected error")
    p.add_argument("--debug", action="store_true", default=default, help="same as --verbose")
    p.add_argument("--log-format", choices=["text", "json"], default=default,
                   help="log lines as text with key=value fields (arq, host, device, ...) or one JSON "
                        "object per line (default: $RAYBORG_LOG_FORMAT, else text)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rayborg",
        description="rayborg: accelerator management (OpenStack Cyborg v2 API) on Ray. "
                    "Run 'rayborg COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"rayborg {__version__}")
    parser.add_argument("--config", metavar="FILE",
                        help="TOML config file (default: $RAYBORG_CONFIG or the user's config dir)")
    _add_logging_options(parser, None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(commands_pkg.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands_pkg.__name__}.{info.name}")
        module.register(sub)
    # The logging options also work after the command (`rayborg serve --log-format json`);
    # SUPPRESS keeps a sub-command from overwriting what was given before it.
    for command in set(sub.choices.values()):
        _add_logging_options(command, argparse.SUPPRESS)
    return parser


def one_line(exc: BaseException) -> str:
    """`Type: first line of the message` (Ray's errors run to many lines)."""
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    from rayborg import logs

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config:
        os.environ["RAYBORG_CONFIG"] = args.config
    verbose = bool(args.verbose or args.debug)
    try:
        logs.setup(args.log_format, logging.DEBUG if verbose else logging.INFO)
        # Front-door worker processes and the Ray actors `serve` starts log the same way.
        os.environ[logs.ENV] = logs.resolve_format(args.log_format)
    except ValueError as exc:  # a bad $RAYBORG_LOG_FORMAT
        print(f"rayborg {args.command}: {exc}", file=sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except CLIError as exc:
        print(f"rayborg {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"rayborg {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one readable line, the traceback on request
        if verbose:
            traceback.print_exc()
        print(f"rayborg {args.command}: {one_line(exc)}"
              + ("" if verbose else " (--debug shows the traceback)"), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

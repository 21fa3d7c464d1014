"""The `rayborg` command: one sub-command per module in `rayborg/commands/`."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import signal
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import rayborg.commands as commands_pkg
from rayborg import __version__


class CLIError(Exception):
    """An error to print as one readable line (exit code 1), not a traceback."""


def _add_global_options(p: argparse.ArgumentParser, default) -> None:
    p.add_argument("--config", metavar="FILE", default=default,
                   help="TOML config file (default: $RAYBORG_CONFIG or the user's config dir)")
    p.add_argument("-v", "--verbose", action="store_true", default=default,
                   help="log debug messages; print the traceback of an unexpected error")
    p.add_argument("--debug", action="store_true", default=default, help="same as --verbose")
    p.add_argument("--log-format", choices=["text", "json"], default=default,
                   help="log lines as text with key=value fields (arq, host, device, ...) or one JSON "
                        "object per line (default: $RAYBORG_LOG_FORMAT, else text)")


class _Parser(argparse.ArgumentParser):
    """With the json log format, a usage error is one JSON line too (usage itself left out)."""

    def __init__(self, *args, log_format: str = "text", **kwargs):
        super().__init__(*args, **kwargs)
        self.log_format = log_format

    def error(self, message: str):
        if self.log_format != "json":
            super().error(message)
        from rayborg import logs

        self.exit(2, logs.error_line(f"{self.prog}: error: {message}", "json") + "\n")


def _requested_format(argv: list[str] | None) -> str:
    """The log format that argv or $RAYBORG_LOG_FORMAT asks for, known before argv is parsed."""
    from rayborg import logs

    pre = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    pre.add_argument("--log-format")
    try:
        return logs.resolve_format(pre.parse_known_args(argv)[0].log_format)
    except (argparse.ArgumentError, ValueError):
        return "text"


def build_parser(log_format: str = "text") -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rayborg",
        description="rayborg: accelerator management (OpenStack Cyborg v2 API) on Ray. "
                    "Run 'rayborg COMMAND --help' for the options of a command.",
        log_format=log_format,
    )
    parser.add_argument("--version", action="version", version=f"rayborg {__version__}")
    _add_global_options(parser, None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                parser_class=partial(_Parser, log_format=log_format))
    for info in sorted(pkgutil.iter_modules(commands_pkg.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands_pkg.__name__}.{info.name}")
        module.register(sub)
    # These options also work after the command (`rayborg serve --config F --log-format json`);
    # SUPPRESS keeps a sub-command from overwriting what was given before it.
    for command in set(sub.choices.values()):
        _add_global_options(command, argparse.SUPPRESS)
    return parser


def one_line(exc: BaseException) -> str:
    """`Type: first line of the message` (Ray's errors run to many lines)."""
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextmanager
def _exported(variables: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the command and the processes it starts, and restore them after
    (an in-process caller such as a test must not inherit this command's --config)."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            return _main(argv)
        finally:
            sys.stdout.flush()  # output still buffered meets a closed pipe here, not at exit
    except BrokenPipeError:
        return _cut_off()
    except SystemExit as exc:
        if isinstance(exc.__context__, BrokenPipeError):  # rich's Console exits 1 on a broken pipe
            return _cut_off()
        raise


def _cut_off() -> int:
    """Whoever read stdout has gone (`rayborg ... | head`): stop quietly, with the status of a tool
    that SIGPIPE ended (128 + 13), and point stdout at /dev/null so the flush at exit cannot
    complain either."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 128 + signal.SIGPIPE


def _main(argv: list[str] | None) -> int:
    from rayborg import logs
    from rayborg.settings import CONFIG_ENV

    parser = build_parser(_requested_format(argv))
    args = parser.parse_args(argv)
    verbose = bool(args.verbose or args.debug)
    try:
        fmt = logs.resolve_format(args.log_format)
    except ValueError as exc:  # a bad $RAYBORG_LOG_FORMAT
        print(f"rayborg {args.command}: {exc}", file=sys.stderr)
        return 2
    logs.setup(fmt, logging.DEBUG if verbose else logging.INFO)

    def fail(message: str, code: int, exc_info: bool = False) -> int:
        """The command's last line on stderr: text, or a JSON object with --log-format json."""
        print(logs.error_line(f"rayborg {args.command}: {message}", fmt, exc_info), file=sys.stderr)
        return code

    # Front-door worker processes and the Ray actors `serve` starts log the same way.
    exported = {logs.ENV: fmt} | ({CONFIG_ENV: args.config} if args.config else {})
    with _exported(exported):
        try:
            return int(args.func(args) or 0)
        except BrokenPipeError:
            raise
        except CLIError as exc:
            return fail(str(exc), 1)
        except KeyboardInterrupt:
            return fail("interrupted", 130)
        except Exception as exc:  # noqa: BLE001 - one readable line, the traceback on request
            if verbose and fmt == "text":
                traceback.print_exc()
            return fail(one_line(exc) + ("" if verbose else " (--debug shows the traceback)"), 1,
                        exc_info=verbose)


if __name__ == "__main__":
    sys.exit(main())

"""Logging for every rayborg process: `text` (one readable line) or `json` (one object per line).

Records name what they are about through `extra=` with the keys in FIELDS, e.g.

    log.warning("programming failed: %s", why, extra={"host": "compute-1", "deployable": "fpga_0"})

The text format appends them as `key=value` (so `grep arq=<uuid>` finds an ARQ's story); the json
format adds them as fields next to time, level, logger and message. Choose with `--log-format`,
else $RAYBORG_LOG_FORMAT, else text.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import datetime, timezone

FIELDS = ("arq", "host", "device", "deployable", "instance")
FORMATS = ("text", "json")
ENV = "RAYBORG_LOG_FORMAT"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def fields(record: logging.LogRecord) -> dict[str, str]:
    """The FIELDS a record carries (set and not None), in FIELDS order."""
    return {k: str(v) for k in FIELDS if (v := getattr(record, k, None)) is not None}


def _quote(value: str) -> str:
    return json.dumps(value) if not value or any(c.isspace() or c in '"=' for c in value) else value


class TextFormatter(logging.Formatter):
    def __init__(self):
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = " ".join(f"{k}={_quote(v)}" for k, v in fields(record).items())
        if not extra:
            return line
        # after the message's first line, so a traceback below it stays intact
        head, sep, rest = line.partition("\n")
        return f"{head} {extra}{sep}{rest}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **fields(record),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (a progress bar's redirect, pytest's capture)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ assigns it; the property always wins
        pass


def resolve_format(fmt: str | None = None) -> str:
    """`fmt`, else $RAYBORG_LOG_FORMAT, else text; ValueError for anything else."""
    chosen = (fmt or os.environ.get(ENV) or "text").strip().lower()
    if chosen not in FORMATS:
        source = "--log-format" if fmt else ENV
        raise ValueError(f"{source} must be one of {', '.join(FORMATS)}, not {chosen!r}")
    return chosen


def formatter(fmt: str | None = None) -> logging.Formatter:
    return JsonFormatter() if resolve_format(fmt) == "json" else TextFormatter()


def error_line(message: str, fmt: str, exc_info: bool = False) -> str:
    """The one line a failing command ends with: `message` itself in the text format; in the json
    format the object a log record of it would be (logger rayborg.cli, level ERROR, the traceback
    of the exception being handled under "exception" when `exc_info`)."""
    if fmt != "json":
        return message
    record = logging.LogRecord("rayborg.cli", logging.ERROR, __file__, 0, message, None,
                               sys.exc_info() if exc_info else None)
    return JsonFormatter().format(record)


def setup(fmt: str | None = None, level: int | str = logging.INFO) -> logging.Handler:
    """Install rayborg's stderr handler on the root logger (replacing one an earlier call
    installed, keeping anyone else's) and return it."""
    handler = _StderrHandler()
    handler.setFormatter(formatter(fmt))
    handler._rayborg = True  # type: ignore[attr-defined]
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_rayborg", False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return handler


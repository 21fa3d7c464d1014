"""Waiting for evidence instead of sleeping: the one polling helper of the tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(predicate: Callable[[], Any], timeout: float = 120.0, interval: float = 0.2,
             what: str = "condition", detail: Callable[[], str] | None = None) -> Any:
    """The first true value `predicate()` returns; AssertionError naming `what` (and `detail()`, e.g.
    a log tail) once `timeout` seconds have passed without one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    extra = f"\n{detail()}" if detail else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{extra}")

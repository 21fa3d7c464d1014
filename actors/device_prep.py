"""Which drivers prepare the handles bound to ARQs (`Driver.PREPARES`), asked by the components
that bind and release: only those handles cost a round trip to their host's agent."""

from __future__ import annotations

from functools import lru_cache

from rayborg.drivers.registry import driver_class


@lru_cache(maxsize=None)
def prepares(driver_name: str | None) -> bool:
    """Whether the driver's prepare/unprepare do anything (False for unknown or missing drivers:
    nothing on the host to act on)."""
    try:
        return driver_name is not None and driver_class(driver_name).PREPARES
    except Exception:  # noqa: BLE001 - an unknown or broken driver module prepares nothing here
        return False

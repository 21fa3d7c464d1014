"""Which quota limits the front door checks a bind against: the `[quota]` table, or in keystone mode
with `[unified_limits] enabled` Keystone's unified limits (`actors/unified_limits.py`), one reader
(and its cache) per app."""

from __future__ import annotations

from weakref import WeakKeyDictionary

from aiohttp import web

from rayborg.actors.unified_limits import UnifiedLimits
from rayborg.settings import Settings
from rayborg.store import quotas

_by_app: WeakKeyDictionary[web.Application, UnifiedLimits] = WeakKeyDictionary()


def from_keystone(settings: Settings) -> bool:
    """Whether the limits are Keystone's: keystone mode with `[unified_limits] enabled`."""
    return settings.auth_strategy == "keystone" and settings.unified_limits.enabled


def limits(app: web.Application | None, settings: Settings) -> quotas.Limits:
    """The limits a bind is checked against: Keystone's unified limits (`from_keystone`, cached per
    app; `app` None: a reader of its own, e.g. `rayborg quota`), else the [quota] table."""
    if not from_keystone(settings):
        return quotas.Limits.from_table(settings.quota)
    source = None if app is None else _by_app.get(app)
    if source is None:
        source = UnifiedLimits(settings.keystone.model_dump(exclude_none=True),
                               settings.unified_limits.model_dump())
        if app is not None:
            source = _by_app.setdefault(app, source)
    return quotas.Limits(per_project=source)

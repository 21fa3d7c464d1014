"""Keystone mode's quota limits: Keystone's unified limits through oslo.limit.

Registered limits of the accelerator service (`class:FPGA`, named as Nova names its resource
classes) are every project's default; a project limit overrides them; a class with neither is
unlimited. oslo.limit reads them with the [keystone] service user's system-scoped token (the user
needs `reader` on the system) from the endpoint `[unified_limits] endpoint_id`, else the one of
`service_type` (and `region_name`) in the catalog.

The quota check itself stays the store's (`store/quotas.py`: counted in the bind's transaction, under
a lock per project), not oslo.limit's `enforce`, whose usage callback would count outside that
transaction. A project's limits are cached `cache_seconds` (5 s by default), so that a burst of binds
asks Keystone once; a limit changed in Keystone applies within that time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from weakref import WeakKeyDictionary

from aiohttp import web

from rayborg.settings import KeystoneOptions, Settings, UnifiedLimitsOptions
from rayborg.store import quotas

PREFIX = "class:"
_configured: tuple | None = None
_configure_lock = threading.Lock()


def _configure(keystone: KeystoneOptions, options: UnifiedLimitsOptions) -> None:
    """oslo.limit reads its options from oslo.config's global CONF (group [oslo_limit]): set them
    there, once per process (the API's policy engine uses a ConfigOpts of its own)."""
    global _configured
    values = {"auth_type": "password", "auth_url": keystone.auth_url, "username": keystone.username,
              "password": keystone.password, "user_domain_id": keystone.user_domain_id,
              "system_scope": "all", "endpoint_id": options.endpoint_id,
              "endpoint_service_type": options.service_type,
              "endpoint_region_name": options.region_name or keystone.region_name}
    wanted = tuple(sorted(values.items()))
    with _configure_lock:
        if _configured == wanted:
            return
        if _configured is not None:
            raise RuntimeError("oslo.limit is already configured for another Keystone in this process")
        from keystoneauth1 import loading
        from oslo_config import cfg
        from oslo_limit import opts

        conf = cfg.CONF
        opts.register_opts(conf)
        conf.register_opts(loading.get_auth_plugin_conf_options("password"), group="oslo_limit")
        for name, value in values.items():
            conf.set_override(name, value, group="oslo_limit")
        _configured = wanted


class UnifiedLimits:
    """project -> resource class -> limit, from Keystone, cached `cache_seconds` per project."""

    def __init__(self, keystone: KeystoneOptions, options: UnifiedLimitsOptions,
                 clock: Callable[[], float] = time.monotonic):
        self._keystone, self._options, self._clock = keystone, options, clock
        self._enforcer = None
        self._cache: dict[str, tuple[float, dict[str, int]]] = {}
        self._lock = threading.Lock()
        self.reads = 0  # Keystone reads made (a test's check that the cache works)

    def __call__(self, project_id: str) -> Mapping[str, int]:
        cached = self._cache.get(project_id)
        if cached is not None and cached[0] > self._clock():
            return cached[1]
        with self._lock:  # one read per project at a time, shared by the binds that wait for it
            cached = self._cache.get(project_id)
            if cached is not None and cached[0] > self._clock():
                return cached[1]
            limits = self._read(project_id)
            self._cache[project_id] = (self._clock() + self._options.cache_seconds, limits)
            return limits

    def _read(self, project_id: str) -> dict[str, int]:
        if self._enforcer is None:
            from oslo_limit import limit

            _configure(self._keystone, self._options)
            self._enforcer = limit.Enforcer(lambda project, names: dict.fromkeys(names, 0), cache=False)
        self.reads += 1
        found = dict(self._enforcer.get_registered_limits(None))
        found.update(self._enforcer.get_project_limits(project_id, None))  # a project's own win
        return {name.removeprefix(PREFIX): value for name, value in found.items() if name.startswith(PREFIX)}


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
        source = UnifiedLimits(settings.keystone, settings.unified_limits)
        if app is not None:
            source = _by_app.setdefault(app, source)
    return quotas.Limits(per_project=source)

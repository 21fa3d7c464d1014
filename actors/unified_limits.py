"""Quota limits from Keystone's unified limits, read through oslo.limit (`[unified_limits]`).

Registered limits of the accelerator service (`class:FPGA`, named as Nova names its resource
classes) are every project's default; a project limit overrides them; a class with neither is
unlimited. oslo.limit reads them with the service user's system-scoped token (the user needs
`reader` on the system) from the endpoint `endpoint_id`, else the one of `service_type` (and
`region_name`) in the catalog. `keystone` is keystoneauth1 password options (RuntimeConfig.keystone),
`options` the `[unified_limits]` table.

The quota check itself stays the store's (`store/quotas.py`: counted in the bind's transaction, under
a lock per project), not oslo.limit's `enforce`, whose usage callback would count outside that
transaction. A project's limits are cached `cache_seconds` (5 s by default), so that a burst of binds
asks Keystone once; a limit changed in Keystone applies within that time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

PREFIX = "class:"
_configured: tuple | None = None
_configure_lock = threading.Lock()


def _configure(keystone: Mapping[str, Any], options: Mapping[str, Any]) -> None:
    """oslo.limit reads its options from oslo.config's global CONF (group [oslo_limit]): set them
    there, once per process (the API's policy engine uses a ConfigOpts of its own)."""
    global _configured
    values = {"auth_type": "password", "auth_url": keystone.get("auth_url"),
              "username": keystone.get("username"), "password": keystone.get("password"),
              "user_domain_id": keystone.get("user_domain_id", "default"), "system_scope": "all",
              "endpoint_id": options.get("endpoint_id"),
              "endpoint_service_type": options.get("service_type", "accelerator"),
              "endpoint_region_name": options.get("region_name") or keystone.get("region_name")}
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

    def __init__(self, keystone: Mapping[str, Any], options: Mapping[str, Any],
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
            self._cache[project_id] = (self._clock() + self._options.get("cache_seconds", 5.0), limits)
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

"""What every actor needs to know, in one picklable object handed to it at creation.

Actors rebuild everything else (store handle, Placement/Nova sessions, drivers) from this in
`__init__`, which Ray runs again after every restart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

NAMESPACE = "rayborg"
PLACEMENT_SYNC_NAME = "rayborg:placement-sync"
HOST_LABEL = "rayborg-host"  # Ray node label naming the host (else the machine's hostname)


def host_agent_name(hostname: str) -> str:
    return f"rayborg:host:{hostname}"


def binder_name(index: int) -> str:
    return f"rayborg:binder:{index}"


@dataclass
class RuntimeConfig:
    database_url: str
    placement_url: str | None = None
    placement_token: str | None = "admin"   # Placement noauth2 admin token, when no Keystone
    nova_url: str | None = None
    nova_token: str | None = None
    keystone: dict[str, Any] = field(default_factory=dict)  # keystoneauth1 password options
    sysfs_root: str = "/sys"
    dev_root: str = "/dev"
    drivers: list[str] | None = None          # None: every real driver
    driver_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    fake_devices: str | None = None           # fake driver spec, for demos and tests
    # Per-host overrides of the fields above (tests give each simulated host its own sysfs tree).
    host_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    report_interval: float = 60.0
    max_group_amount: int = 64                # Settings' input limits, for claims made through Ray
    max_profile_amount: int = 128
    quota: dict[str, int] = field(default_factory=dict)  # Settings.quota, for claims made through Ray
    unified_limits: dict[str, Any] | None = None  # [unified_limits] when Keystone's apply instead
    binder_count: int = 2
    retry_interval: float = 2.0               # first backoff step for Placement/Nova retries
    redrive_interval: float = 15.0            # binders re-take BindStarted ARQs idle this long
    log_format: str = "text"                  # rayborg.logs format of the actors' own log lines
    log_level: str = "INFO"
    namespace: str = NAMESPACE

    def setup_logging(self) -> None:
        """Called first in every actor's __init__: Ray's worker processes log with Ray's plain format
        otherwise, without the arq/host/device fields operators filter on."""
        from rayborg import logs

        try:
            logs.setup(self.log_format, self.log_level)
        except ValueError:  # a bad setting must not keep an actor from starting
            logs.setup("text", "INFO")

    def for_host(self, hostname: str) -> dict[str, Any]:
        """Driver settings of one host: drivers, roots and options (fake spec folded in)."""
        over = self.host_overrides.get(hostname, {})
        drivers = over.get("drivers", self.drivers)
        options = {k: dict(v) for k, v in over.get("driver_options", self.driver_options).items()}
        fake = over.get("fake_devices", self.fake_devices)
        if fake is not None:
            drivers = sorted(set(drivers or []) | {"fake"})
            # A per-host seed keeps fake PCI addresses (and so RP names) distinct across hosts.
            options.setdefault("fake", {}).update({"spec": fake, "seed": options.get("fake", {}).get(
                "seed", sum(hostname.encode()) % 4096)})
        return {"drivers": drivers if drivers is not None else None,
                "sysfs_root": over.get("sysfs_root", self.sysfs_root),
                "dev_root": over.get("dev_root", self.dev_root), "options": options}

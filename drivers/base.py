"""The driver contract: typed report models, the `Driver` base class and the errors drivers raise.

A driver discovers the devices it owns under a sysfs root and returns `DriverDevice` trees
(device -> deployables -> attach handles). It never touches the store or Placement. The agent
(actors/) turns a list of them into one `HostReport` per host (see `rayborg.drivers.registry`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import os_resource_classes
import os_traits
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator

DeviceType = Literal["GPU", "FPGA", "QAT", "NIC", "SSD", "NVME", "PMEM", "MDEV", "PCI", "AICHIP"]
# PMEM and SPDK handles are rayborg additions: the PMEM spec asks for a new handle type without
# naming it, and the SPDK spec predates attach handles.
AttachType = Literal["PCI", "MDEV", "TEST_PCI", "PMEM", "SPDK"]

_log = logging.getLogger("rayborg.drivers")
_CUSTOM_NAME = re.compile(r"^CUSTOM_[A-Z0-9_]+$")
_STANDARD_TRAITS = frozenset(os_traits.get_traits())


def valid_resource_class(name: str) -> bool:
    """Placement's rule (os-resource-classes): a standard class, or CUSTOM_ and [A-Z0-9_]."""
    return name in os_resource_classes.STANDARDS or bool(_CUSTOM_NAME.match(name))


def valid_trait(name: str) -> bool:
    """Placement's rule (os-traits): a standard trait, or CUSTOM_ and [A-Z0-9_]."""
    return name in _STANDARD_TRAITS or bool(_CUSTOM_NAME.match(name))


def custom_name(*parts: str) -> str:
    """`CUSTOM_` + parts, upper-cased, with every other character than A-Z0-9 turned into `_`.

    The normalisation of the agent-driver API spec: upper case, spaces/hyphens -> `_`.
    """
    raw = "_".join(p for p in parts if p)
    body = re.sub(r"[^A-Z0-9_]", "_", raw.upper())
    return body if body.startswith("CUSTOM_") else f"CUSTOM_{body}"


def safe_name(text: str) -> str:
    """Deployable / Placement RP names: only `[A-Za-z0-9_-]` (upstream's rule)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


# Counters per device and the shape of their names: bounded, since every counter becomes a
# Prometheus series (labels hostname, device, counter).
MAX_STATS = 32
_STAT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def check_stats(stats: dict[str, Any]) -> dict[str, int | float]:
    """Stats as a report carries them: at most MAX_STATS finite numbers under `[a-z][a-z0-9_]*` names."""
    if len(stats) > MAX_STATS:
        raise ValueError(f"{len(stats)} stats, at most {MAX_STATS} per device")
    out: dict[str, int | float] = {}
    for name, value in sorted(stats.items()):
        if not _STAT_NAME.match(name):
            raise ValueError(f"stat name {name!r} must be [a-z][a-z0-9_]*, at most 63 characters")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value \
                or value in (float("inf"), float("-inf")):
            raise ValueError(f"stat {name!r} must be a finite number, got {value!r}")
        out[name] = value
    return out


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class DriverAttachHandle(_Model):
    attach_type: AttachType
    attach_info: dict[str, str]
    in_use: bool = False

    @field_validator("attach_info")
    @classmethod
    def _sorted(cls, info: dict[str, str]) -> dict[str, str]:
        return dict(sorted(info.items()))

    def info_json(self) -> str:
        """The string the store keeps in `attach_handles.attach_info` (sorted keys, as upstream)."""
        return json.dumps(self.attach_info, sort_keys=True)


class ControlPathId(_Model):
    cpid_type: Literal["PCI", "PMEM", "SPDK", "FAKE"] = "PCI"
    cpid_info: dict[str, str]

    def info_json(self) -> str:
        return json.dumps(self.cpid_info, sort_keys=True)


class DriverDeployable(_Model):
    name: str
    num_accelerators: int = Field(ge=0)
    driver_name: str
    bitstream_id: str | None = None
    resource_class: str
    traits: list[str] = Field(default_factory=list)
    # Cyborg's attribute rows: "rc" and "trait0".. are derived from the two fields above; drivers
    # may add their own facts (e.g. "physical_network").
    attributes: dict[str, str] = Field(default_factory=dict)
    attach_handles: list[DriverAttachHandle] = Field(default_factory=list)
    children: list[DriverDeployable] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name_chars(cls, name: str) -> str:
        if not name or safe_name(name) != name:
            raise ValueError(f"deployable name {name!r} must be non-empty [A-Za-z0-9_-]")
        return name

    @field_validator("resource_class")
    @classmethod
    def _rc(cls, rc: str) -> str:
        if not valid_resource_class(rc):
            raise ValueError(f"{rc!r} is neither a standard nor a CUSTOM_ resource class")
        return rc

    @field_validator("traits")
    @classmethod
    def _traits(cls, traits: list[str]) -> list[str]:
        for t in traits:
            if not valid_trait(t):
                raise ValueError(f"{t!r} is neither a standard nor a CUSTOM_ trait")
        return list(dict.fromkeys(traits))  # drop duplicates, keep order

    @model_validator(mode="after")
    def _derive_attributes(self) -> DriverDeployable:
        extra = {k: v for k, v in self.attributes.items() if k != "rc" and not re.fullmatch(r"trait\d+", k)}
        derived = {"rc": self.resource_class} | {f"trait{i}": t for i, t in enumerate(self.traits)}
        self.attributes = dict(sorted((extra | derived).items()))
        self.attach_handles.sort(key=lambda h: (h.attach_type, canonical_json(h.attach_info)))
        return self


class DriverDevice(_Model):
    type: DeviceType
    vendor: str
    model: str
    std_board_info: dict[str, Any] = Field(default_factory=dict)
    vendor_board_info: str = ""
    key: str  # stable identity on the host: "<driver>:<address>"
    controlpath_id: ControlPathId
    deployables: list[DriverDeployable] = Field(default_factory=list)
    stub: bool = False
    # The driver's counters (`Driver.device_stats`): telemetry, not identity. Left out of the report's
    # content hash, so a counter that moves never makes a report "changed" for Placement.
    stats: dict[str, int | float] = Field(default_factory=dict)

    @field_validator("stats")
    @classmethod
    def _stats(cls, stats: dict[str, int | float]) -> dict[str, int | float]:
        return check_stats(stats)

    @model_serializer(mode="wrap")
    def _dump(self, handler):
        out = handler(self)
        if not out.get("stats", True):  # no counters: the dump (and tree.json captures) as before stats
            del out["stats"]
        return out

    @model_validator(mode="after")
    def _order(self) -> DriverDevice:
        self.deployables.sort(key=lambda d: d.name)
        return self

    def std_board_info_json(self) -> str:
        """The string the store keeps in `devices.std_board_info`."""
        return json.dumps(self.std_board_info, sort_keys=True)


class DriverError(_Model):
    driver: str
    device: str = ""  # PCI address, namespace, socket path... whatever names the thing
    file: str = ""  # the file that could not be read or that held a bad value
    message: str


class HostReport(_Model):
    hostname: str
    drivers: list[str]
    devices: list[DriverDevice] = Field(default_factory=list)
    errors: list[DriverError] = Field(default_factory=list)
    content_hash: str = ""

    @model_validator(mode="after")
    def _order_and_hash(self) -> HostReport:
        self.drivers = sorted(self.drivers)
        self.devices.sort(key=lambda d: d.key)
        self.errors.sort(key=lambda e: (e.driver, e.device, e.file, e.message))
        self.content_hash = self.compute_hash()
        return self

    def compute_hash(self) -> str:
        """sha256 of the canonical JSON of everything but the hash and the devices' stats: equal
        hash == nothing changed that the store's tree or Placement shows (counters move all the time)."""
        body = self.model_dump(mode="json", exclude={"content_hash": True, "devices": {"__all__": {"stats"}}})
        return hashlib.sha256(canonical_json(body).encode()).hexdigest()

    def stats_hash(self) -> str:
        """sha256 of the devices' stats alone: a report whose counters moved is sent for them."""
        body = {d.key: d.stats for d in self.devices if d.stats}
        return hashlib.sha256(canonical_json(body).encode()).hexdigest()

    def deployables(self) -> list[DriverDeployable]:
        return [dep for dev in self.devices for dep in dev.deployables]


# ---- errors ---------------------------------------------------------------------------------


class DriverFailure(Exception):
    """A problem with one device; discovery turns it into a `DriverError` entry and goes on."""

    def __init__(self, message: str, *, device: str = "", file: str | Path = ""):
        super().__init__(message)
        self.message = message
        self.device = device
        self.file = str(file)

    def __str__(self) -> str:
        where = ", ".join(x for x in (self.device and f"device {self.device}",
                                      self.file and f"file {self.file}") if x)
        return f"{self.message} ({where})" if where else self.message


class UnknownDriver(ValueError):
    """A driver name that is not in the registry."""


class ProgrammingError(Exception):
    """A vendor tool failed, hung or could not run; names the device, the tool and what it said."""

    def __init__(self, message: str, *, device: str, tool: str = "", exit_code: int | None = None,
                 stderr: str = ""):
        detail = [f"device {device}"]
        if tool:
            detail.append(f"tool {tool}")
        if exit_code is not None:
            detail.append(f"exit code {exit_code}")
        if stderr.strip():
            detail.append(f"stderr: {stderr.strip()[-500:]}")
        super().__init__(f"{message} ({'; '.join(detail)})")
        self.device, self.tool, self.exit_code, self.stderr = device, tool, exit_code, stderr


class BitstreamError(ProgrammingError):
    """The bitstream does not exist or its metadata does not fit the device."""


class NotSupported(ProgrammingError):
    """The driver has no way to do this (e.g. no firmware update tool for its devices)."""


# ---- the driver contract --------------------------------------------------------------------


@dataclass
class DriverContext:
    """Where a driver looks and what it is told: every path is configurable so tests use fixtures."""

    hostname: str = "localhost"
    sysfs_root: Path = Path("/sys")
    dev_root: Path = Path("/dev")
    options: dict[str, Any] = field(default_factory=dict)  # this driver's own options
    # every driver's options by driver name, for a family split across drivers (nvidia_gpu must
    # leave the GPUs that nvidia_vgpu's config claims, and take the others)
    host_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.sysfs_root = Path(self.sysfs_root)
        self.dev_root = Path(self.dev_root)

    def dep_name(self, suffix: str) -> str:
        """`<hostname>_<suffix>`, the deployable naming rule (upstream), made RP-name safe."""
        return safe_name(f"{self.hostname}_{suffix}")


@dataclass(frozen=True)
class BoundHandle:
    """An attach handle claimed for an ARQ, as a driver's `prepare`/`unprepare` get it."""

    uuid: str
    attach_type: str
    attach_info: dict[str, str] = field(default_factory=dict)
    # the ARQ's instance (Nova's server, or a standalone bind's / claim's consumer): what a driver
    # that grants the device to its consumer names it by (SPDK's NVMe-oF host NQN)
    instance_uuid: str | None = None


@dataclass
class Discovery:
    devices: list[DriverDevice] = field(default_factory=list)
    errors: list[DriverError] = field(default_factory=list)


class Driver:
    """One accelerator family. Subclasses set NAME/TYPE/VENDOR and implement `discover()`."""

    NAME: ClassVar[str] = ""
    TYPE: ClassVar[str] = ""
    VENDOR: ClassVar[str] = ""

    def __init__(self, ctx: DriverContext | None = None):
        self.ctx = ctx or DriverContext()
        self.options: dict[str, Any] = dict(self.ctx.options)

    # Whether `prepare`/`unprepare` do anything: the binder skips the round trip to the host (and
    # finishes the bind in its batch) for the handles of drivers that do not.
    PREPARES: ClassVar[bool] = False

    def discover(self) -> Discovery:
        raise NotImplementedError

    def prepare(self, handle: BoundHandle) -> None:
        """Make a claimed handle usable before its ARQ is Bound (e.g. create its mdev). Idempotent:
        a bind resumed after a restart prepares again. Nothing to do by default."""

    def unprepare(self, handle: BoundHandle) -> None:
        """Undo `prepare` once the ARQ has let go of the handle. Idempotent (a handle already
        unprepared is no error). Nothing to do by default."""

    def error(self, failure: DriverFailure | Exception, *, device: str = "", file: str = "") -> DriverError:
        if isinstance(failure, DriverFailure):
            return DriverError(driver=self.NAME, device=failure.device or device,
                               file=failure.file or file, message=failure.message)
        return DriverError(driver=self.NAME, device=device, file=file,
                           message=f"{type(failure).__name__}: {failure}")

    def device_stats(self, device: DriverDevice) -> dict[str, int | float]:
        """The counters of one discovered device (temperature, packets, firmware requests...), read
        where its driver finds them; none by default. A failure leaves that device without stats."""
        return {}

    def get_stats(self) -> dict[str, dict[str, int | float]]:
        """The generic-driver spec's `get_stats`: device key -> counters, for every device found."""
        return {dev.key: dict(dev.stats) for dev in self.with_stats(self.discover().devices)}

    def with_stats(self, devices: list[DriverDevice]) -> list[DriverDevice]:
        """Fill each device's `stats` (the driver option `stats = false` turns them off)."""
        if str(self.options.get("stats", True)).lower() in ("false", "0", "no", "off"):
            return devices
        for dev in devices:
            try:
                dev.stats = check_stats(self.device_stats(dev))
            except Exception as exc:  # noqa: BLE001 - counters never cost a device its report
                _log.debug("%s: no stats for %s: %s", self.NAME, dev.key, exc)
                dev.stats = {}
        return devices

    def update(self, device: DriverDevice, image_path: Path, *, timeout: float | None = None) -> str:
        """The generic-driver spec's `update(control_path, image_path)`: flash the device's firmware
        with the image at `image_path` through the vendor tool; returns what the tool said. Drivers
        without a firmware tool raise NotSupported."""
        raise NotSupported(f"driver {self.NAME} cannot update firmware", device=device.key)

    def seconds_option(self, option: str, default: float, *, device: str, tool: str) -> float:
        """A driver option in seconds (`program_timeout`, `firmware_timeout`, ...): a bad value is this
        device's programming error, not a crash; inf and nan are bad too (they would never fire)."""
        raw = self.options.get(option, default)
        try:
            limit = float(raw)
        except (TypeError, ValueError):
            limit = float("nan")
        if not (math.isfinite(limit) and limit > 0):
            raise ProgrammingError(f"option {option} must be a positive number of seconds, got {raw!r}",
                                   device=device, tool=tool)
        return limit

    def find_device(self, key_or_address: str) -> DriverDevice:
        """A discovered device by its key (`driver:address`), its PCI address or a deployable name."""
        for dev in self.discover().devices:
            if key_or_address in (dev.key, dev.key.partition(":")[2]) \
                    or any(d.name == key_or_address for d in dev.deployables):
                return dev
        raise DriverFailure(f"no device {key_or_address!r} of driver {self.NAME} on this host",
                            device=key_or_address)

    def find_deployable(self, name: str) -> tuple[DriverDevice, DriverDeployable]:
        for dev in self.discover().devices:
            stack = list(dev.deployables)
            while stack:  # a nested card's regions too (children of its deployable)
                dep = stack.pop()
                if dep.name == name:
                    return dev, dep
                stack.extend(dep.children)
        raise DriverFailure(f"no deployable named {name!r} on this host", device=name)

"""NVIDIA pGPU driver: whole GPUs for passthrough (train nvidia-gpu-driver-proposal).

Owns NVIDIA (0x10de) display/3D controllers (class 0x0300/0x0302) that are not vGPUs. Which GPUs are
vGPUs: on a host whose `nvidia_vgpu` options list `device_addresses`, exactly those (every other GPU
is a pGPU, virtualizable or not: upstream's rule); without that config, those with
`mdev_supported_types` ("make sure the GPU device hasn't been virtualized. Otherwise, we can't use it
as a pGPU"). The spec discovers through `lspci`; we read the same vendor/device/class from sysfs.
RC PGPU; traits OWNER_CYBORG + CUSTOM_NVIDIA_<PID> (upstream).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from rayborg.drivers.base import DriverDevice, DriverFailure, custom_name
from rayborg.drivers.pci import PciDriver
from rayborg.drivers.sysfs import PciAddress, PciFunction, class_prefix

GPU_CLASSES = ("0x0300", "0x0302")
VGPU_DRIVER = "nvidia_vgpu"


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v).strip() for v in value]


def _as_table(value: Any, option: str) -> dict[str, Any]:
    """A table, or its JSON text (what a RAYBORG_DRIVER_OPTIONS__<DRIVER>__<KEY> variable holds)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = None
    if not isinstance(value, dict):
        raise ValueError(f"{option} must be a table of vGPU type -> PCI addresses, got {value!r}")
    return value


def as_bool(value: Any, option: str) -> bool:
    """A bool, or its spelling in an environment variable ("true"/"false", "1"/"0", "yes"/"no")."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", ""):
        return False
    raise ValueError(f"option {option} must be true or false, got {value!r}")


def vgpu_config(options: dict[str, Any]) -> dict[str, str]:
    """PCI address -> vGPU type from nvidia_vgpu's options, validated like upstream (InvalidvGPUConfig)."""
    enabled = _as_list(options.get("enabled_vgpu_types"))
    raw = options.get("device_addresses")
    addresses = _as_table(raw, "device_addresses") if raw else {}
    out: dict[str, str] = {}
    for t in addresses:
        if t not in enabled:
            raise ValueError(f"vGPU type {t!r} has device_addresses but is not in enabled_vgpu_types")
    for t in enabled:
        addrs = _as_list(addresses.get(t))
        if not addrs:
            raise ValueError(f"enabled vGPU type {t!r} has no device_addresses")
        for a in addrs:
            try:
                a = str(PciAddress.parse(a))
            except DriverFailure:
                raise ValueError(f"malformed PCI address {a!r} for vGPU type {t!r}") from None
            if a in out:
                raise ValueError(f"PCI address {a} is given for vGPU types {out[a]!r} and {t!r}")
            out[a] = t
    return out


class NvidiaGpuBase(PciDriver):
    TYPE = "GPU"
    VENDOR = "0x10de"
    VENDOR_NAME = "NVIDIA"
    # device id -> model, as the PCI id database (pci.ids) names them; other ids show as the id
    MODELS: ClassVar[dict[str, str]] = {
        "0x1eb8": "Tesla T4", "0x1db4": "Tesla V100-PCIE-16GB", "0x1db6": "Tesla V100-PCIE-32GB",
        "0x20b0": "A100-SXM4-40GB", "0x20b2": "A100-SXM4-80GB", "0x20b5": "A100-PCIE-80GB",
        "0x20f1": "A100-PCIE-40GB", "0x2236": "A10", "0x2237": "A10G", "0x26b5": "L40", "0x27b8": "L4",
        "0x2322": "H800-PCIE", "0x2324": "H800", "0x2330": "H100-SXM5-80GB", "0x2331": "H100-PCIE",
        "0x2335": "H200-SXM-141GB"}

    def __init__(self, ctx=None):
        super().__init__(ctx)
        self.filter_sriov_vfs = as_bool(self.options.get("filter_sriov_vfs", False), "filter_sriov_vfs")

    def is_gpu(self, fn: PciFunction) -> bool:
        if fn.vendor != self.VENDOR or not any(class_prefix(fn.class_code, c) for c in GPU_CLASSES):
            return False
        # SR-IOV VFs of Ampere+ GPUs carry the mdev types; upstream's filter_sriov_vfs skips them
        return not (fn.is_vf and self.filter_sriov_vfs)

    @staticmethod
    def virtualized(fn: PciFunction) -> bool:
        return (fn.path / "mdev_supported_types").is_dir()


class NvidiaGpuDriver(NvidiaGpuBase):
    NAME = "nvidia_gpu"

    def __init__(self, ctx=None):
        super().__init__(ctx)
        try:
            self.vgpu_addresses: set[str] | None = set(vgpu_config(self.ctx.host_options.get(VGPU_DRIVER) or {}))
        except ValueError:  # nvidia_vgpu reports its bad config; until fixed, tell vGPUs by mdev types
            self.vgpu_addresses = None

    def matches(self, fn: PciFunction) -> bool:
        if not self.is_gpu(fn) or fn.is_vf:
            return False
        if self.vgpu_addresses:  # a vGPU-configured host: the config decides, not the mdev types
            return fn.name not in self.vgpu_addresses
        return not self.virtualized(fn)

    def build(self, fn: PciFunction) -> DriverDevice:
        dep = self.deployable(fn, [self.handle(fn)], resource_class="PGPU",
                              traits=["OWNER_CYBORG", custom_name(self.VENDOR_NAME, self.product(fn))])
        return self.device(fn, [dep])

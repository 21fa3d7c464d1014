"""NVIDIA pGPU driver: whole GPUs for passthrough (train nvidia-gpu-driver-proposal).

Owns NVIDIA (0x10de) display/3D controllers (class 0x0300/0x0302) that are not vGPUs. Which GPUs are
vGPUs: on a host whose `nvidia_vgpu` options list `device_addresses`, exactly those (every other GPU
is a pGPU, virtualizable or not: upstream's rule); without that config, those with
`mdev_supported_types` ("make sure the GPU device hasn't been virtualized. Otherwise, we can't use it
as a pGPU"). The spec discovers through `lspci`; we read the same vendor/device/class from sysfs.
RC PGPU; traits OWNER_CYBORG + CUSTOM_NVIDIA_<PID> (upstream).

Stats: a hwmon temperature where the kernel driver has one (nouveau: `hwmon/hwmonN/temp1_input`); with
the option `nvidia_smi` (its path) the query of `nvidia-smi --query-gpu=... --format=csv` run once a
sweep: temperature, power, utilisation and memory per GPU, matched by PCI bus id.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from rayborg.drivers.base import DriverDevice, DriverFailure, custom_name
from rayborg.drivers.pci import PciDriver
from rayborg.drivers.stats import hwmon_temperature, number, pci_dir
from rayborg.drivers.sysfs import PciAddress, PciFunction, class_prefix
from rayborg.drivers.tools import run_tool

GPU_CLASSES = ("0x0300", "0x0302")
# nvidia-smi query field -> stat (after pci.bus_id, in this order)
SMI_FIELDS = {"temperature.gpu": "temperature_c", "power.draw": "power_w", "utilization.gpu": "utilization_gpu_pct",
              "utilization.memory": "utilization_memory_pct", "memory.used": "memory_used_mib",
              "memory.total": "memory_total_mib"}
SMI_TIMEOUT = 10.0
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

    def with_stats(self, devices):
        tool = self.options.get("nvidia_smi")
        self._smi: dict[str, dict[str, int | float]] = {}
        if tool and devices and str(self.options.get("stats", True)).lower() not in ("false", "0", "no", "off"):
            try:
                self._smi = smi_stats(run_tool(
                    [str(tool), f"--query-gpu=pci.bus_id,{','.join(SMI_FIELDS)}", "--format=csv,noheader,nounits"],
                    device="all GPUs", timeout=SMI_TIMEOUT))
            except Exception:  # noqa: BLE001 - no nvidia-smi answer: sysfs stats only
                self._smi = {}
        return super().with_stats(devices)

    def device_stats(self, device: DriverDevice) -> dict[str, int | float]:
        out: dict[str, int | float] = {}
        if (temp := hwmon_temperature(pci_dir(self.ctx.sysfs_root, device.key) / "hwmon")) is not None:
            out["temperature_c"] = temp
        return out | getattr(self, "_smi", {}).get(device.key.partition(":")[2], {})


def smi_stats(text: str) -> dict[str, dict[str, int | float]]:
    """nvidia-smi's CSV (no header, no units) -> PCI address -> stats; "[N/A]" fields are left out."""
    out: dict[str, dict[str, int | float]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != 1 + len(SMI_FIELDS):
            continue
        try:  # nvidia-smi prints 00000000:AF:00.0: an 8-digit domain
            bus = PciAddress.parse(cells[0][-12:])
        except DriverFailure:
            continue
        out[str(bus)] = {stat: v for stat, cell in zip(SMI_FIELDS.values(), cells[1:])
                         if (v := number(cell)) is not None}
    return out

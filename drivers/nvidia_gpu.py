"""NVIDIA pGPU driver: whole GPUs for passthrough (train nvidia-gpu-driver-proposal).

Owns NVIDIA (0x10de) display/3D controllers (class 0x0300/0x0302) that are *not* virtualized: a GPU
with `mdev_supported_types` belongs to `nvidia_vgpu` ("make sure the GPU device hasn't been
virtualized. Otherwise, we can't use it as a pGPU"). The spec discovers through `lspci`; we read the
same vendor/device/class from sysfs. RC PGPU; traits OWNER_CYBORG + CUSTOM_NVIDIA_<PID> (upstream).
"""

from __future__ import annotations

from typing import ClassVar

from rayborg.drivers.base import DriverDevice, custom_name
from rayborg.drivers.pci import PciDriver
from rayborg.drivers.sysfs import PciFunction, class_prefix

GPU_CLASSES = ("0x0300", "0x0302")


class NvidiaGpuBase(PciDriver):
    TYPE = "GPU"
    VENDOR = "0x10de"
    VENDOR_NAME = "NVIDIA"
    MODELS: ClassVar[dict[str, str]] = {"0x1eb8": "Tesla T4", "0x1db6": "Tesla V100-PCIE-32GB",
                                        "0x1db4": "Tesla V100-PCIE-16GB", "0x20b0": "A100-SXM4-40GB",
                                        "0x20f1": "A100-PCIE-40GB", "0x2236": "A10", "0x2330": "H100-SXM5-80GB"}

    def is_gpu(self, fn: PciFunction) -> bool:
        if fn.vendor != self.VENDOR or not any(class_prefix(fn.class_code, c) for c in GPU_CLASSES):
            return False
        # SR-IOV VFs of Ampere+ GPUs carry the mdev types; upstream's filter_sriov_vfs skips them
        return not (fn.is_vf and self.options.get("filter_sriov_vfs", False))

    @staticmethod
    def virtualized(fn: PciFunction) -> bool:
        return (fn.path / "mdev_supported_types").is_dir()


class NvidiaGpuDriver(NvidiaGpuBase):
    NAME = "nvidia_gpu"

    def matches(self, fn: PciFunction) -> bool:
        return self.is_gpu(fn) and not fn.is_vf and not self.virtualized(fn)

    def build(self, fn: PciFunction) -> DriverDevice:
        dep = self.deployable(fn, [self.handle(fn)], resource_class="PGPU",
                              traits=["OWNER_CYBORG", custom_name(self.VENDOR_NAME, self.product(fn))])
        return self.device(fn, [dep])

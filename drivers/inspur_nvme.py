"""Inspur NVMe SSD driver (wallaby NVMe-SSD-driver-proposal).

Owns NVMe controllers (class 0x010802, the spec's "Non-Volatile memory controller") of the Inspur
vendor id 0x1bd4 (upstream's, the real one). Device type SSD as the spec says (the NVME type exists
for other drivers); RC CUSTOM_SSD; traits CUSTOM_SSD_INSPUR, CUSTOM_SSD_PRODUCT_ID_<PID>; 1 PCI handle.
"""

from __future__ import annotations

from rayborg.drivers.base import DriverDevice, custom_name
from rayborg.drivers.pci import PciDriver
from rayborg.drivers.sysfs import PciFunction, class_prefix

INSPUR_VENDORS = ("0x1bd4", "0x1db4")  # 0x1db4: the victoria inspur-fpga spec's spelling


class InspurNvmeDriver(PciDriver):
    NAME = "inspur_nvme"
    TYPE = "SSD"
    VENDOR = "0x1bd4"
    VENDOR_NAME = "INSPUR"

    def matches(self, fn: PciFunction) -> bool:
        return fn.vendor in INSPUR_VENDORS and class_prefix(fn.class_code, "0x010802") and not fn.is_vf

    def build(self, fn: PciFunction) -> DriverDevice:
        ctrl = sorted(p.name for p in (fn.path / "nvme").iterdir()) if (fn.path / "nvme").is_dir() else []
        dep = self.deployable(fn, [self.handle(fn)], resource_class="CUSTOM_SSD",
                              traits=[custom_name("SSD", self.VENDOR_NAME),
                                      custom_name("SSD_PRODUCT_ID", self.product(fn))])
        return self.device(fn, [dep], vendor_board_info=" ".join(ctrl))

"""Inspur FPGA driver (victoria inspur-fpga-driver-proposal): discovery and BSP-based programming.

Vendor id: the spec writes 0x1db4, upstream (and the PCI id database) use 0x1bd4; both are accepted.
Owns processing-accelerator functions (class 0x12) of that vendor, so Inspur NVMe SSDs stay with
`inspur_nvme`. RC FPGA; traits CUSTOM_FPGA_INSPUR, CUSTOM_FPGA_PRODUCT_ID_<PID>; 1 PCI handle.
Programming uses the BSP environment of the spec (`{"env": "/var/lib/inspur-fpga", "cmd": "aocl"}`):
`aocl program acl<N> <image>` with AOCL_BOARD_PACKAGE_ROOT=<env>; options `tool` and `bsp_env`.
Sysfs shows no loaded function, so the function is what this process last programmed.
A board without a bound kernel driver has no acl<N> for aocl: an error entry, not a device.
"""

from __future__ import annotations

import os
from pathlib import Path

from rayborg.drivers.base import DriverDevice, ProgrammingError
from rayborg.drivers.fpga import ACCELERATOR_CLASS, FpgaDriver
from rayborg.drivers.inspur_nvme import INSPUR_VENDORS
from rayborg.drivers.sysfs import PciFunction, class_prefix

BSP_ENV = "/var/lib/inspur-fpga"
PASSTHROUGH_DRIVERS = ("vfio-pci", "pci-stub")


class InspurFpgaDriver(FpgaDriver):
    NAME = "inspur_fpga"
    VENDOR = "0x1bd4"
    VENDOR_NAME = "INSPUR"
    DEFAULT_TOOL = "aocl"
    MODELS = {"0xa115": "F10A"}
    # no BSP driver, no /dev/acl<N>: aocl cannot see the board (and would misnumber the others)
    REQUIRES_KERNEL_DRIVER = True

    def matches(self, fn: PciFunction) -> bool:
        return fn.vendor in INSPUR_VENDORS and class_prefix(fn.class_code, ACCELERATOR_CLASS) and not fn.is_vf

    def build(self, fn: PciFunction) -> DriverDevice:
        key = f"{self.NAME}:{fn.name}"
        bitstream_id, function = self.loaded_state(key, None)
        dep = self.deployable(fn, [self.handle(fn)], resource_class="FPGA", bitstream_id=bitstream_id,
                              traits=self.fpga_traits(product=self.product(fn), function=function))
        bsp = self.options.get("bsp_env", BSP_ENV)
        return self.device(fn, [dep], vendor_board_info=f"bsp env={bsp} cmd={Path(self.tool()).name}")

    def program_argv(self, device: DriverDevice, image: Path) -> list[str]:
        # aocl numbers the boards its BSP driver probed acl0, acl1... in PCI order: a board on another
        # driver (vfio-pci for a VM) has no acl<N>, and counting it would program the wrong board
        driver = device.std_board_info.get("driver", "")
        if driver in PASSTHROUGH_DRIVERS:
            raise ProgrammingError(f"bound to {driver}, not to the BSP driver: aocl cannot reach it",
                                   device=device.key, tool=self.tool())
        keys = sorted(d.key for d in self.discover().devices if d.std_board_info.get("driver") == driver)
        return [self.tool(), "program", f"acl{keys.index(device.key)}", str(image)]

    def program_env(self, device: DriverDevice) -> dict[str, str]:
        return dict(os.environ) | {"AOCL_BOARD_PACKAGE_ROOT": str(self.options.get("bsp_env", BSP_ENV))}

"""Xilinx (Alveo) FPGA driver (zed add-xilinx-fpga-driver).

A card shows a management PF (function 0, class 0x12 processing accelerator) and, once XRT is installed, a user PF (function 1, product
id + 1). Both make one device with one deployable of one accelerator and two PCI attach handles
("only when both mgmt PF and user PF are binded to one vm ... end user can program"). The control
path is the mgmt PF. Traits CUSTOM_FPGA_XILINX and CUSTOM_FPGA_PRODUCT_ID_<PID> (the spec's "three
traits" name only two; upstream emits those two), plus region/function traits when the mgmt PF
exposes XRT's `interface_uuids` / `logic_uuids`. Programming runs the spec's
`xbmgmt program --device <bdf> --base --image <file>` (option `tool`).
"""

from __future__ import annotations

from pathlib import Path

from rayborg.drivers.base import DriverDevice, DriverFailure
from rayborg.drivers.fpga import ACCELERATOR_CLASS, FpgaDriver
from rayborg.drivers.sysfs import PciFunction, class_prefix


def _uuid_file(fn: PciFunction, name: str) -> str | None:
    text = fn.optional(name)
    return text.split()[0].lower() if text else None


class XilinxFpgaDriver(FpgaDriver):
    NAME = "xilinx_fpga"
    VENDOR = "0x10ee"
    VENDOR_NAME = "XILINX"
    DEFAULT_TOOL = "/opt/xilinx/xrt/bin/xbmgmt"
    MODELS = {"0x5000": "U200", "0x5004": "U250", "0x500c": "U280", "0x5020": "U50"}

    def matches(self, fn: PciFunction) -> bool:
        # upstream keeps lspci's "Processing accelerators" lines only: other Xilinx-vendor functions
        # (memory controllers, network cards built on Xilinx parts) are not Alveo mgmt PFs
        return (fn.vendor == self.VENDOR and class_prefix(fn.class_code, ACCELERATOR_CLASS)
                and fn.address.function == "0" and not fn.is_vf)

    def build(self, fn: PciFunction) -> DriverDevice:
        handles = [self.handle(fn)]
        user = PciFunction(fn.root, f"{fn.address.slot}.1")
        if user.path.exists():
            if user.vendor != self.VENDOR:
                raise DriverFailure(f"user PF {user.name} has vendor {user.vendor}", device=fn.name,
                                    file=user.file("vendor"))
            handles.append(self.handle(user))
        else:  # XRT not installed: the card can't be used by a VM yet, say so but keep reporting it
            self.warnings.append(DriverFailure(f"user PF {user.name} absent (is XRT installed?)",
                                               device=fn.name, file=user.path))
        region, function = _uuid_file(fn, "interface_uuids"), _uuid_file(fn, "logic_uuids")
        bitstream_id, function = self.loaded_state(f"{self.NAME}:{fn.name}", function)
        extra = {k: v for k, v in (("region_id", region), ("function_id", function)) if v}
        dep = self.deployable(fn, handles, num=1, resource_class="FPGA", bitstream_id=bitstream_id,
                              traits=self.fpga_traits(product=self.product(fn), region=region, function=function),
                              attributes=extra)
        return self.device(fn, [dep], user_pf=user.name if len(handles) > 1 else "")

    def program_argv(self, device: DriverDevice, image: Path) -> list[str]:
        c = device.controlpath_id.cpid_info
        bdf = f"{c['domain']}:{c['bus']}:{c['device']}.{c['function']}"
        return [self.tool(), "program", "--device", bdf, "--base", "--image", str(image)]

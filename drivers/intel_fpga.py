"""Intel FPGA (OPAE) driver: PF/VF tree, PR region id, loaded AFU (function) id, fpgaconf programming.

Spec: queens cyborg-fpga-driver-proposal (discovery of PF/VF, regions, `program()`), rocky agent-driver
API (region/function traits). Trait spellings follow the latest implemented form (train
nova-placement / upstream): CUSTOM_FPGA_INTEL, CUSTOM_FPGA_INTEL_<FAMILY>, CUSTOM_FPGA_REGION_INTEL_<ID>,
CUSTOM_FPGA_FUNCTION_ID_INTEL_<ID>; RC FPGA (standard since Train).

Sysfs read: `bus/pci/devices/<pf>` (vendor/device, virtfn*), and for region/function both the
OPAE `intel-fpga` layout (`fpga/intel-fpga-dev.N/intel-fpga-fme.N/pr/interface_id`,
`.../intel-fpga-port.N/afu_id`) and the upstream-kernel DFL layout (`fpga_region/regionN/dfl-fme.N/
.../compat_id`, `.../dfl-port.N/afu_id`). The port (and its afu_id) moves to the VF when VFs exist.
"""

from __future__ import annotations

from pathlib import Path

from rayborg.drivers.base import DriverDevice
from rayborg.drivers.fpga import FpgaDriver
from rayborg.drivers.sysfs import PciFunction, read_text

REGION_GLOBS = ("fpga/*/intel-fpga-fme.*/pr/interface_id",
                "fpga_region/*/dfl-fme.*/dfl-fme-region.*/fpga_region/*/compat_id")
FUNCTION_GLOBS = ("fpga/*/intel-fpga-port.*/afu_id", "fpga_region/*/dfl-port.*/afu_id")


def _first(fn: PciFunction, patterns: tuple[str, ...]) -> str | None:
    for pattern in patterns:
        for path in sorted(fn.path.glob(pattern)):
            return read_text(path, device=fn.name).lower()
    return None


class IntelFpgaDriver(FpgaDriver):
    NAME = "intel_fpga"
    VENDOR = "0x8086"
    VENDOR_NAME = "INTEL"
    DEFAULT_TOOL = "/usr/bin/fpgaconf"
    REQUIRES_KERNEL_DRIVER = True
    MODELS = {"0x09c4": "PAC_ARRIA10", "0xbcc0": "PAC_ARRIA10", "0x0b2b": "PAC_D5005", "0x0b30": "PAC_N3000"}
    IDS = frozenset(("0x8086", d) for d in MODELS)

    def build(self, fn: PciFunction) -> DriverDevice:
        vfs = self.vfs(fn)
        region = _first(fn, REGION_GLOBS)
        # with VFs the accelerator port sits on a VF; take the first that has one
        function = next((f for f in (_first(x, FUNCTION_GLOBS) for x in [fn, *vfs]) if f), None)
        key = f"{self.NAME}:{fn.name}"
        bitstream_id, function = self.loaded_state(key, function)
        handles = [self.handle(vf) for vf in vfs] or [self.handle(fn)]
        model = self.model_of(fn)
        extra = {k: v for k, v in (("region_id", region), ("function_id", function)) if v}
        dep = self.deployable(fn, handles, resource_class="FPGA", bitstream_id=bitstream_id,
                              traits=self.fpga_traits(family=model, region=region, function=function),
                              attributes=extra)
        stub = not any((fn.path / d).is_dir() for d in ("fpga", "fpga_region"))
        return self.device(fn, [dep], model=model, stub=stub, pr_num="1" if region else "0",
                           vf_count=str(len(vfs)))

    def program_argv(self, device: DriverDevice, image: Path) -> list[str]:
        c = device.controlpath_id.cpid_info
        return [self.tool(), "--segment", f"0x{c['domain']}", "--bus", f"0x{c['bus']}",
                "--device", f"0x{c['device']}", "--function", f"0x{c['function']}", str(image)]

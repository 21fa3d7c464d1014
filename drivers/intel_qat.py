"""Intel QAT driver (victoria qat-driver-proposal): each PF is a device; PF or each VF is attachable.

The spec gives no ids, RC or traits; ids and RC CUSTOM_QAT follow upstream. Upstream reports no
traits; we add CUSTOM_QAT_INTEL and CUSTOM_QAT_PRODUCT_ID_<PID> (the SSD/FPGA pattern) so device
profiles can ask for a QAT generation.
PF without VFs -> one deployable (the PF); PF with VFs -> one deployable per VF, one accelerator each.
"""

from __future__ import annotations

from rayborg.drivers.base import DriverDevice, custom_name
from rayborg.drivers.pci import PciDriver
from rayborg.drivers.sysfs import PciFunction


class IntelQatDriver(PciDriver):
    NAME = "intel_qat"
    TYPE = "QAT"
    VENDOR = "0x8086"
    VENDOR_NAME = "INTEL"
    REQUIRES_KERNEL_DRIVER = True
    MODELS = {"0x37c8": "C62x", "0x0435": "DH895xCC", "0x19e2": "C3xxx", "0x18a0": "C4xxx",
              "0x4940": "4xxx", "0x4942": "401xx"}
    IDS = frozenset(("0x8086", d) for d in MODELS)

    def build(self, fn: PciFunction) -> DriverDevice:
        traits = [custom_name("QAT", self.VENDOR_NAME), custom_name("QAT_PRODUCT_ID", self.product(fn))]
        deps = [self.deployable(f, [self.handle(f)], resource_class="CUSTOM_QAT", traits=traits)
                for f in (self.vfs(fn) or [fn])]
        return self.device(fn, deps, vf_count=str(fn.num_vfs), total_vfs=str(fn.total_vfs))

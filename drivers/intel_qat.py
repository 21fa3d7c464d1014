"""Intel QAT driver (victoria qat-driver-proposal): each PF is a device; PF or each VF is attachable.

The spec gives no ids, RC or traits; ids and RC CUSTOM_QAT follow upstream. Upstream reports no
traits; we add CUSTOM_QAT_INTEL and CUSTOM_QAT_PRODUCT_ID_<PID> (the SSD/FPGA pattern) so device
profiles can ask for a QAT generation.
PF without VFs -> one deployable (the PF); PF with VFs -> one deployable per VF, one accelerator each.

Stats, where the kernel's qat driver shows them: `qat/state` in sysfs (`state_up` 1/0), and in its
debugfs directory `kernel/debug/qat_<class>_<address>/` the firmware counters (`fw_counters`: requests,
responses and errors summed over the acceleration engines) and, on QAT 4xxx with telemetry on, the
telemetry sample (`telemetry/device_data`, `tl_<name>`).
"""

from __future__ import annotations

import re

from rayborg.drivers.base import DriverDevice, custom_name
from rayborg.drivers.pci import PciDriver
from rayborg.drivers.stats import key_values, number, pci_dir
from rayborg.drivers.sysfs import PciFunction

# `| Firmware Requests [AE  0]:   123 |` (one line per engine and counter) -> the counter's stat
_FW_LINE = re.compile(r"^\W*(Firmware Requests|Firmware Responses|Firmware Error|RAS Events)\s*\[AE\s*\d+\]\s*:\s*(\d+)")
_FW_STATS = {"Firmware Requests": "fw_requests", "Firmware Responses": "fw_responses",
             "Firmware Error": "fw_errors", "RAS Events": "fw_ras_events"}
TELEMETRY_LIMIT = 20  # telemetry has dozens of fields per ring pair: the first ones only

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

    def device_stats(self, device: DriverDevice) -> dict[str, int | float]:
        address = device.key.partition(":")[2]
        out: dict[str, int | float] = {}
        try:
            state = (pci_dir(self.ctx.sysfs_root, device.key) / "qat" / "state").read_text().strip()
            out["state_up"] = int(state == "up")
        except OSError:
            pass
        for debug in sorted((self.ctx.sysfs_root / "kernel" / "debug").glob(f"qat_*_{address}")):
            out |= fw_counters(debug / "fw_counters")
            try:
                text = (debug / "telemetry" / "device_data").read_text()
            except (OSError, UnicodeDecodeError):
                text = ""
            out |= key_values(text, prefix="tl_", limit=TELEMETRY_LIMIT)
            break
        return out


def fw_counters(path) -> dict[str, int]:
    """The debugfs `fw_counters` table summed over the engines; {} when it cannot be read."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return {}
    out: dict[str, int] = {}
    for line in text.splitlines():
        m = _FW_LINE.match(line)
        if m and (value := number(m.group(2))) is not None:
            name = _FW_STATS[m.group(1)]
            out[name] = out.get(name, 0) + int(value)
    return out

"""Inspur NVMe SSD driver (wallaby NVMe-SSD-driver-proposal).

Owns NVMe controllers (class 0x010802, the spec's "Non-Volatile memory controller") of the Inspur
vendor id 0x1bd4 (upstream's, the real one). Device type SSD as the spec says (the NVME type exists
for other drivers); RC CUSTOM_SSD; traits CUSTOM_SSD_INSPUR, CUSTOM_SSD_PRODUCT_ID_<PID>; 1 PCI handle.

Stats: the controller's composite temperature from its hwmon sensor (`nvme/nvmeN/hwmonM/temp1_input`,
kernel 5.5+), and with the option `smart_log_tool` (nvme-cli, e.g. /usr/sbin/nvme) the SMART log of
`nvme smart-log /dev/nvmeN -o json` (wear, errors, power-on hours...).
"""

from __future__ import annotations

import json

from rayborg.drivers.base import DriverDevice, custom_name
from rayborg.drivers.pci import PciDriver
from rayborg.drivers.stats import hwmon_temperature, pci_dir
from rayborg.drivers.sysfs import PciFunction, class_prefix
from rayborg.drivers.tools import run_tool

# nvme-cli's smart-log JSON keys reported as stats (the percentage is spelled two ways across versions)
SMART_KEYS = {"critical_warning": "critical_warning", "avail_spare": "avail_spare",
              "percent_used": "percent_used", "percentage_used": "percent_used",
              "data_units_read": "data_units_read", "data_units_written": "data_units_written",
              "host_read_commands": "host_read_commands", "host_write_commands": "host_write_commands",
              "power_cycles": "power_cycles", "power_on_hours": "power_on_hours",
              "unsafe_shutdowns": "unsafe_shutdowns", "media_errors": "media_errors",
              "num_err_log_entries": "num_err_log_entries"}
SMART_TIMEOUT = 10.0

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

    def device_stats(self, device: DriverDevice) -> dict[str, int | float]:
        out: dict[str, int | float] = {}
        ctrls = sorted((pci_dir(self.ctx.sysfs_root, device.key) / "nvme").glob("nvme*"))
        if not ctrls:
            return out
        ctrl = ctrls[0]
        if (temp := hwmon_temperature(ctrl)) is not None:
            out["temperature_c"] = temp
        tool = self.options.get("smart_log_tool")
        if tool:
            text = run_tool([str(tool), "smart-log", str(self.ctx.dev_root / ctrl.name), "-o", "json"],
                            device=device.key, timeout=SMART_TIMEOUT)
            out = smart_stats(json.loads(text)) | out  # hwmon's temperature wins
        return out


def smart_stats(log: dict) -> dict[str, int | float]:
    """nvme-cli's smart-log JSON -> stats (its `temperature` is in kelvin)."""
    out: dict[str, int | float] = {}
    for key, stat in SMART_KEYS.items():
        value = log.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[stat] = value
    if isinstance(log.get("temperature"), (int, float)) and "temperature_c" not in out:
        out["temperature_c"] = round(log["temperature"] - 273.15, 2)
    return out

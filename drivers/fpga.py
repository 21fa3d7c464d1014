"""Shared FPGA driver behaviour: programming through a vendor tool and remembering what was loaded.

`program(deployable, bitstream)` checks the bitstream fits the device, runs the vendor tool (path,
timeout configurable through the driver options `tool` and `program_timeout`), then re-discovers
and returns the deployable as it now is.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from rayborg.drivers.base import DriverDeployable, DriverDevice, custom_name
from rayborg.drivers.bitstreams import Bitstream, program_target
from rayborg.drivers.pci import PciDriver
from rayborg.drivers.tools import DEFAULT_TIMEOUT, run_tool

ACCELERATOR_CLASS = "0x12"  # PCI base class "Processing accelerators": what FPGA cards show


class FpgaDriver(PciDriver):
    TYPE = "FPGA"
    DEFAULT_TOOL: ClassVar[str] = ""

    def __init__(self, ctx=None):
        super().__init__(ctx)
        # device key -> bitstream last programmed by this process: sysfs seldom says which image is
        # loaded, only (at best) its function id.
        self.loaded: dict[str, Bitstream] = {}

    # ---- discovery helpers ----------------------------------------------------------------

    def fpga_traits(self, *, family: str | None = None, product: str | None = None,
                    region: str | None = None, function: str | None = None) -> list[str]:
        """Vendor, family or product, region and function traits (upstream's spellings)."""
        v = self.VENDOR_NAME
        traits = [custom_name("FPGA", v)]
        if family:
            traits.append(custom_name("FPGA", v, family))
        if product:
            traits.append(custom_name("FPGA_PRODUCT_ID", product))
        if region:
            traits.append(custom_name("FPGA_REGION", v, region))
        if function:
            traits.append(custom_name("FPGA_FUNCTION_ID", v, function))
        return traits

    def loaded_state(self, key: str, function: str | None) -> tuple[str | None, str | None]:
        """(bitstream_id, function id) for a device: what sysfs says, completed by what we loaded."""
        bs = self.loaded.get(key)
        if bs is None:
            return None, function
        if function is None:
            return bs.image_id, bs.meta.function_uuid
        same = function.replace("-", "").lower() == bs.meta.function_uuid.replace("-", "").lower()
        return (bs.image_id if same else None), function

    # ---- programming ----------------------------------------------------------------------

    def tool(self) -> str:
        return str(self.options.get("tool", self.DEFAULT_TOOL))

    def program_argv(self, device: DriverDevice, image: Path) -> list[str]:
        raise NotImplementedError

    def program_argv_for(self, device: DriverDevice, dep: DriverDeployable, image: Path) -> list[str]:
        """The tool's argv for one deployable: the device's, unless a driver programs its PR regions
        one by one (intel_fpga)."""
        return self.program_argv(device, image)

    def loaded_key(self, device: DriverDevice, dep: DriverDeployable) -> str:
        """Where `loaded` remembers what `dep` runs: per device, or per region for a nested card."""
        return device.key

    def program_env(self, device: DriverDevice) -> dict[str, str] | None:
        return None

    def program(self, deployable: DriverDeployable | str, bitstream: Bitstream,
                *, timeout: float | None = None) -> DriverDeployable:
        device, dep = program_target(self, deployable, bitstream, vendor=self.VENDOR_NAME)
        if timeout is None:
            timeout = self.seconds_option("program_timeout", DEFAULT_TIMEOUT, device=device.key,
                                          tool=self.tool())
        run_tool(self.program_argv_for(device, dep, bitstream.path), device=device.key, timeout=timeout,
                 env=self.program_env(device))
        self.loaded[self.loaded_key(device, dep)] = bitstream
        _, dep = self.find_deployable(dep.name)
        return dep

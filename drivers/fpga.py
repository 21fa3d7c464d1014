"""Shared FPGA driver behaviour: programming through a vendor tool and remembering what was loaded.

`program(deployable, bitstream)` checks the bitstream fits the device, runs the vendor tool (path,
timeout configurable through the driver options `tool` and `program_timeout`), then re-discovers
and returns the deployable as it now is.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar

from rayborg.drivers.base import (BitstreamError, DriverDeployable, DriverDevice, DriverFailure, ProgrammingError,
                                  custom_name)
from rayborg.drivers.bitstreams import Bitstream, check_fits
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

    def boards(self, device: DriverDevice) -> set[str]:
        pid = device.std_board_info.get("device_id", "")
        return {device.model, pid, pid.removeprefix("0x")} - {""}

    def program_timeout(self, device: str) -> float:
        """Option `program_timeout` (seconds); a bad value is this device's programming error, not a crash."""
        raw = self.options.get("program_timeout", DEFAULT_TIMEOUT)
        try:
            limit = float(raw)
        except (TypeError, ValueError):
            limit = float("nan")
        if not (math.isfinite(limit) and limit > 0):  # inf/nan never fire: the hang this option prevents
            raise ProgrammingError(f"option program_timeout must be a positive number of seconds, got {raw!r}",
                                   device=device, tool=self.tool())
        return limit

    def program(self, deployable: DriverDeployable | str, bitstream: Bitstream,
                *, timeout: float | None = None) -> DriverDeployable:
        name = deployable if isinstance(deployable, str) else deployable.name
        try:
            device, dep = self.find_deployable(name)
        except DriverFailure as exc:
            raise BitstreamError(str(exc), device=name) from None
        if not bitstream.path.is_file():
            raise BitstreamError(f"bitstream file {bitstream.path} does not exist", device=device.key)
        check_fits(bitstream.meta, device=device.key, vendor_names={self.VENDOR_NAME, device.vendor},
                   boards=self.boards(device), region_id=dep.attributes.get("region_id"))
        limit = self.program_timeout(device.key) if timeout is None else timeout
        run_tool(self.program_argv_for(device, dep, bitstream.path), device=device.key, timeout=limit,
                 env=self.program_env(device))
        self.loaded[self.loaded_key(device, dep)] = bitstream
        _, dep = self.find_deployable(name)
        return dep

"""Driver names -> classes, and `discover_host`: run drivers, isolate their failures, build a HostReport."""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from rayborg.drivers.base import (BitstreamError, DeviceType, Driver, DriverContext, DriverError, HostReport, ProgrammingError,
                                  UnknownDriver)

# name -> "module:Class" (imported on first use so one broken module cannot break the others)
DRIVERS: dict[str, str] = {
    "intel_fpga": "intel_fpga:IntelFpgaDriver",
    "inspur_fpga": "inspur_fpga:InspurFpgaDriver",
    "xilinx_fpga": "xilinx_fpga:XilinxFpgaDriver",
    "nvidia_gpu": "nvidia_gpu:NvidiaGpuDriver",
    "nvidia_vgpu": "nvidia_vgpu:NvidiaVgpuDriver",
    "intel_qat": "intel_qat:IntelQatDriver",
    "intel_x710": "intel_x710:IntelX710Driver",
    "inspur_nvme": "inspur_nvme:InspurNvmeDriver",
    "spdk": "spdk:SpdkDriver",
    "pmem": "pmem:PmemDriver",
    "fake": "fake:FakeDriver",
}
REAL_DRIVERS: tuple[str, ...] = tuple(n for n in DRIVERS if n != "fake")
# driver_options sections that are not a driver's: the bitstream source (HostDrivers) and the
# HostAgent's hotplug monitor
OPTION_SECTIONS: tuple[str, ...] = ("bitstreams", "hotplug")
SYSFS = "sysfs"  # pseudo-driver name for PCI entries no driver could even identify


def driver_class(name: str) -> type[Driver]:
    if name not in DRIVERS:
        raise UnknownDriver(f"unknown driver {name!r} (known: {', '.join(DRIVERS)})")
    module, cls = DRIVERS[name].split(":")
    return getattr(importlib.import_module(f"rayborg.drivers.{module}"), cls)


def check_names(names: Iterable[str]) -> list[str]:
    names = [n.strip() for n in names if n.strip()]
    unknown = [n for n in names if n not in DRIVERS]
    if unknown:
        raise UnknownDriver(f"unknown driver{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
                            f"(known: {', '.join(DRIVERS)})")
    return names


def check_option_sections(options: Mapping[str, Any]) -> None:
    """driver_options keys must be driver names or OPTION_SECTIONS, each holding a table of options."""
    unknown = [k for k in options if k not in DRIVERS and k not in OPTION_SECTIONS]
    if unknown:
        raise UnknownDriver(f"driver_options for unknown driver{'s' if len(unknown) > 1 else ''} "
                            f"{', '.join(map(repr, unknown))} (known: {', '.join([*DRIVERS, *OPTION_SECTIONS])})")


class HostDrivers:
    """The driver instances of one host. Keep one per host: FPGA drivers remember what they loaded."""

    def __init__(self, hostname: str, *, sysfs_root: str | Path = "/sys", dev_root: str | Path = "/dev",
                 drivers: Iterable[str] | None = None, options: Mapping[str, Mapping[str, Any]] | None = None,
                 bitstreams: Any = None):
        self.hostname = hostname
        # where image ids given to `program` are looked up: a LocalBitstreams / GlanceBitstreams, or
        # built from options["bitstreams"] ({"dir": ...} or {"glance_url": ..., keystone options})
        from rayborg.drivers.bitstreams import bitstream_source

        self.bitstreams = bitstreams or bitstream_source(dict((options or {}).get("bitstreams") or {}))
        names = check_names(REAL_DRIVERS if drivers is None else drivers)
        options = options or {}
        self.drivers: dict[str, Driver] = {}
        self.errors: list[DriverError] = []
        for name in names:
            ctx = DriverContext(hostname=hostname, sysfs_root=Path(sysfs_root), dev_root=Path(dev_root),
                                options=dict(options.get(name, {})), host_options=dict(options))
            try:
                self.drivers[name] = driver_class(name)(ctx)
            except Exception as exc:  # a bad option or a broken module: report, run the others
                self.errors.append(DriverError(driver=name, message=f"driver did not start: {exc}"))
        self.sysfs_root = Path(sysfs_root)

    def discover(self) -> HostReport:
        from rayborg.drivers.pci import PciDriver, scan_pci

        devices, errors = [], list(self.errors)
        for name, driver in self.drivers.items():
            try:
                found = driver.discover()
            except Exception as exc:  # one driver's bug never takes the host down
                errors.append(driver.error(exc))
                continue
            devices += driver.with_stats(found.devices)
            errors += found.errors
        if any(isinstance(d, PciDriver) for d in self.drivers.values()):
            _, bad = scan_pci(self.sysfs_root)
            errors += [DriverError(driver=SYSFS, device=b.device, file=b.file, message=b.message) for b in bad]
        return HostReport(hostname=self.hostname, drivers=list(self.drivers), devices=devices, errors=errors)

    def driver(self, name: str) -> Driver:
        try:
            return self.drivers[name]
        except KeyError:
            raise UnknownDriver(f"driver {name!r} is not enabled on {self.hostname}") from None

    def program(self, driver_name: str, deployable, bitstream, *, timeout: float | None = None):
        """Program a deployable with its driver; raises ProgrammingError/BitstreamError."""
        driver = self.driver(driver_name)
        program = getattr(driver, "program", None)
        if program is None:
            name = deployable if isinstance(deployable, str) else deployable.name
            raise ProgrammingError(f"driver {driver_name} cannot program devices", device=name)
        fetched = None
        if isinstance(bitstream, str) and driver_name != "fake":
            if self.bitstreams is None:
                raise BitstreamError(f"bitstream {bitstream} given by id but no bitstream source is configured",
                                     device=bitstream)
            bitstream = fetched = self.bitstreams.fetch(bitstream)
        try:
            return program(deployable, bitstream, timeout=timeout)
        finally:
            if fetched is not None:  # a Glance download is ours to delete, whatever the tool did
                fetched.discard()


    def update(self, driver_name: str, device: str, image_path: str | Path, *,
               timeout: float | None = None) -> str:
        """Flash a device's firmware (`Driver.update`): `device` is its key, PCI address or one of
        its deployables' names; raises ProgrammingError (NotSupported without a vendor tool)."""
        driver = self.driver(driver_name)
        image = Path(image_path)
        if not image.is_file():
            raise BitstreamError(f"firmware image {image} does not exist", device=device)
        return driver.update(driver.find_device(device), image, timeout=timeout)


def discover_host(hostname: str, sysfs_root: str | Path = "/sys", drivers: Iterable[str] | None = None,
                  dev_root: str | Path = "/dev", options: Mapping[str, Mapping[str, Any]] | None = None
                  ) -> HostReport:
    """One discovery sweep: all real drivers by default (not `fake`); unknown names raise UnknownDriver."""
    return HostDrivers(hostname, sysfs_root=sysfs_root, dev_root=dev_root, drivers=drivers,
                       options=options).discover()


__all__ = ["DRIVERS", "REAL_DRIVERS", "HostDrivers", "discover_host", "driver_class", "check_names",
           "DeviceType"]

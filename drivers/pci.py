"""Generic PCI driver: match functions by ids, build device trees, isolate per-device failures.

FPGA, GPU, QAT, NIC and NVMe drivers subclass `PciDriver` and only say which functions they own
(`matches`) and how one owned function becomes a `DriverDevice` (`build`).
"""

from __future__ import annotations

from typing import ClassVar

from rayborg.drivers.base import (ControlPathId, Discovery, Driver, DriverAttachHandle, DriverDeployable,
                                  DriverDevice, DriverFailure)
from rayborg.drivers.sysfs import PciFunction, list_pci


def scan_pci(sysfs_root) -> tuple[list[PciFunction], list[DriverFailure]]:
    """Functions whose vendor/device/class files read cleanly, and a failure for each that doesn't."""
    funcs, bad = list_pci(sysfs_root)
    good = []
    for fn in funcs:
        try:
            fn.vendor, fn.device_id, fn.class_code  # noqa: B018 - read (and cache) now to validate
            good.append(fn)
        except DriverFailure as exc:
            bad.append(exc)
    return good, bad


class PciDriver(Driver):
    # (vendor, device) of the functions this driver claims as devices (PFs), lower-case 0x....
    IDS: ClassVar[frozenset[tuple[str, str]]] = frozenset()
    VENDOR_NAME: ClassVar[str] = ""  # used in traits, e.g. INTEL
    MODELS: ClassVar[dict[str, str]] = {}  # device id -> model name
    # PF-managing drivers need the vendor kernel driver bound; without it the card is half-present.
    REQUIRES_KERNEL_DRIVER: ClassVar[bool] = False

    def matches(self, fn: PciFunction) -> bool:
        return (fn.vendor, fn.device_id) in self.IDS and not fn.is_vf

    def build(self, fn: PciFunction) -> DriverDevice | None:
        raise NotImplementedError

    def discover(self) -> Discovery:
        funcs, _ = scan_pci(self.ctx.sysfs_root)  # unreadable ids are reported once by the registry
        result = Discovery()
        self.warnings: list[DriverFailure] = []
        for fn in self.select(funcs):
            try:
                if self.REQUIRES_KERNEL_DRIVER and fn.driver is None:
                    raise DriverFailure("no kernel driver bound (no 'driver' link); device skipped",
                                        device=fn.name, file=fn.file("driver"))
                device = self.build(fn)
                if device is not None:
                    result.devices.append(device)
            except DriverFailure as exc:
                result.errors.append(self.error(exc, device=fn.name))
            except (OSError, ValueError) as exc:  # pydantic ValidationError is a ValueError
                result.errors.append(self.error(exc, device=fn.name, file=getattr(exc, "filename", None) or ""))
        result.errors += [self.error(w) for w in self.warnings]
        return result

    def select(self, funcs: list[PciFunction]) -> list[PciFunction]:
        out = []
        for fn in funcs:
            try:
                if self.matches(fn):
                    out.append(fn)
            except DriverFailure as exc:
                self.warnings.append(exc)
        return out

    # ---- building blocks ------------------------------------------------------------------

    def model_of(self, fn: PciFunction) -> str:
        return self.MODELS.get(fn.device_id, fn.device_id)

    def product(self, fn: PciFunction) -> str:
        """Product id for traits: `0x09c4` -> `09C4`."""
        return fn.device_id.removeprefix("0x").upper()

    def vfs(self, fn: PciFunction) -> list[PciFunction]:
        """The PF's VFs; a broken `virtfn*` link is a warning and that VF is left out."""
        out = []
        for link in sorted(fn.path.glob("virtfn*"), key=lambda p: int(p.name[6:] or 0)):
            try:
                target = link.resolve()
                if not link.is_symlink() or not target.exists():
                    raise DriverFailure("broken virtfn symlink", device=fn.name, file=link)
                out.append(PciFunction(fn.root, target.name))
            except DriverFailure as exc:
                self.warnings.append(exc)
        return out

    def handle(self, fn: PciFunction, attach_type: str = "PCI", **extra: str) -> DriverAttachHandle:
        return DriverAttachHandle(attach_type=attach_type, attach_info=fn.address.info() | extra)

    def cpid(self, fn: PciFunction) -> ControlPathId:
        return ControlPathId(cpid_type="PCI", cpid_info=fn.address.info())

    def device(self, fn: PciFunction, deployables: list[DriverDeployable], *, model: str | None = None,
               vendor_board_info: str = "", stub: bool = False, **board: str) -> DriverDevice:
        return DriverDevice(type=self.TYPE, vendor=fn.vendor, model=model or self.model_of(fn),
                            std_board_info=fn.std_board_info() | board, vendor_board_info=vendor_board_info,
                            key=f"{self.NAME}:{fn.name}", controlpath_id=self.cpid(fn),
                            deployables=deployables, stub=stub)

    def deployable(self, fn: PciFunction, handles: list[DriverAttachHandle], *, resource_class: str,
                   traits: list[str], num: int | None = None, **kw) -> DriverDeployable:
        return DriverDeployable(name=self.ctx.dep_name(fn.name), driver_name=self.NAME,
                                num_accelerators=len(handles) if num is None else num,
                                resource_class=resource_class, traits=traits, attach_handles=handles, **kw)

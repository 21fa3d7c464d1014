"""Test helpers for driver and host tests, on top of the tree.json format (rayborg.drivers.sysfs_tree):
the catalogue of broken PCI entries every driver must survive, a stand-in kernel for mdev writes,
and the report a driver should give for a PCI device."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rayborg.drivers.sysfs import PciAddress
from rayborg.drivers.sysfs_tree import SysfsBuilder


@dataclass(frozen=True)
class BadInput:
    """One way a PCI function's sysfs entry can be broken, and the error entry it must turn into."""

    name: str
    apply: Callable[[SysfsBuilder, str], Any]  # (builder, address) -> breaks that function
    file: str  # the error's `file` ends with "<address>/<file>" ("" : the function's own entry)
    message: str  # part of the error's message
    sysfs: bool = False  # unidentifiable function: reported once by the `sysfs` pseudo-driver

    def file_suffix(self, address: str) -> str:
        return f"{address}/{self.file}" if self.file else address


def _dev(b: SysfsBuilder, address: str, name: str) -> str:
    return str(b.device_dir(address).relative_to(b.root) / name)


# What every PCI driver must survive: each ends as one error entry naming the function and the file,
# never a crash, and the host's other devices are still reported.
PCI_BAD_INPUTS: tuple[BadInput, ...] = (
    BadInput("missing device id (half-present)", lambda b, a: (b.device_dir(a) / "device").unlink(),
             "device", "missing sysfs file", sysfs=True),
    BadInput("missing class", lambda b, a: (b.device_dir(a) / "class").unlink(), "class", "missing sysfs file",
             sysfs=True),
    BadInput("non-hex vendor", lambda b, a: b.write(_dev(b, a, "vendor"), "0xgg"), "vendor", "non-hex value '0xgg'",
             sysfs=True),
    BadInput("vendor not UTF-8", lambda b, a: (b.device_dir(a) / "vendor").write_bytes(b"\xff\xfe\n"), "vendor",
             "unreadable sysfs file: UnicodeDecodeError", sysfs=True),
    BadInput("device dir vanished", lambda b, a: shutil.rmtree(b.device_dir(a)), "", "broken symlink", sysfs=True),
    BadInput("unreadable numa_node", lambda b, a: b.unreadable(_dev(b, a, "numa_node")), "numa_node",
             "unreadable sysfs file"),
    BadInput("non-numeric numa_node", lambda b, a: b.write(_dev(b, a, "numa_node"), "banana"), "numa_node",
             "non-numeric value 'banana'"),
    BadInput("non-hex subsystem_device", lambda b, a: b.write(_dev(b, a, "subsystem_device"), "zz"),
             "subsystem_device", "non-hex value 'zz'"),
    BadInput("broken driver link", lambda b, a: b.broken_link(_dev(b, a, "driver")), "driver", "broken symlink"),
    BadInput("broken iommu_group link", lambda b, a: b.broken_link(_dev(b, a, "iommu_group")), "iommu_group",
             "broken symlink"),
)
# A vendor file but no driver link: drivers that need their kernel driver skip the function with this.
UNBOUND = BadInput("no driver link", lambda b, a: (b.device_dir(a) / "driver").unlink(missing_ok=True), "driver",
                   "no kernel driver bound")


class FakeKernel:
    """Acts on the files the kernel would react to (mdev `create` / `remove`) after a driver wrote them."""

    def __init__(self, root: str | Path):
        self.b = SysfsBuilder(root)
        self.root = Path(root)

    def settle(self) -> list[str]:
        """Apply pending writes; returns what happened, e.g. ['create <uuid>', 'remove <uuid>']."""
        done = []
        for create in sorted(self.root.glob("devices/*/*/mdev_supported_types/*/create")):
            text = create.read_text().strip()
            if text:
                address, type_id = create.parents[2].name, create.parent.name
                self.b.mdev(address, type_id, text)
                create.write_text("")
                done.append(f"create {text}")
        mdevs = self.root / "bus" / "mdev" / "devices"
        for link in sorted(mdevs.glob("*")) if mdevs.is_dir() else []:
            if (link / "remove").read_text().strip() == "1":
                real = link.resolve()
                t = (real / "mdev_type").resolve()
                (t / "devices" / link.name).unlink()
                avail = t / "available_instances"
                avail.write_text(f"{int(avail.read_text()) + 1}\n")
                link.unlink()
                shutil.rmtree(real)
                done.append(f"remove {link.name}")
        return done


def pci_handle(address: str, attach_type: str = "PCI", **extra: str) -> dict[str, Any]:
    """One attach handle as `DriverAttachHandle.model_dump()` gives it."""
    return {"attach_type": attach_type, "attach_info": dict(sorted((PciAddress.parse(address).info() | extra).items())),
            "in_use": False}


def expected_pci_device(driver: str, address: str, *, type: str, vendor: str, model: str, board: dict[str, str],
                        rc: str, traits: list[str], num: int, handles: list[dict[str, Any]] | None = None,
                        deployables_at: list[str] | None = None, handle_info: dict[str, str] | None = None,
                        hostname: str = "n1", vendor_board_info: str = "", bitstream_id: str | None = None,
                        attributes: dict[str, str] | None = None) -> dict[str, Any]:
    """A whole PCI device as `DriverDevice.model_dump()` should give it, for report tests that compare
    every field. One deployable per address of `deployables_at` (default: the device's own), each with
    `handles` or else one PCI handle on that address (plus `handle_info`)."""
    attrs = (attributes or {}) | {"rc": rc} | {f"trait{i}": t for i, t in enumerate(traits)}
    return {"type": type, "vendor": vendor, "model": model, "std_board_info": board,
            "vendor_board_info": vendor_board_info, "key": f"{driver}:{address}", "stub": False,
            "controlpath_id": {"cpid_type": "PCI", "cpid_info": PciAddress.parse(address).info()},
            "deployables": [{"name": f"{hostname}_{at.replace(':', '_').replace('.', '_')}",
                             "num_accelerators": num, "driver_name": driver, "bitstream_id": bitstream_id,
                             "resource_class": rc, "traits": traits, "attributes": dict(sorted(attrs.items())),
                             "attach_handles": handles if handles is not None else [pci_handle(at, **(handle_info or {}))],
                             "children": []} for at in deployables_at or [address]]}

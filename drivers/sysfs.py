"""Reading the kernel's sysfs PCI tree under any root, with errors that name the file.

Every read goes through `read_text`/`read_int` so a missing, unreadable or malformed file becomes a
`DriverFailure` carrying the device address and the path, never a bare OSError/ValueError.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from rayborg.drivers.base import DriverFailure

_ADDR = re.compile(r"^([0-9a-fA-F]{4}):([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])$")


@dataclass(frozen=True, order=True)
class PciAddress:
    domain: str
    bus: str
    device: str
    function: str

    @classmethod
    def parse(cls, text: str) -> PciAddress:
        m = _ADDR.match(text.strip())
        if not m:
            raise DriverFailure(f"malformed PCI address {text!r}", device=text)
        return cls(*(g.lower() for g in m.groups()))

    def __str__(self) -> str:
        return f"{self.domain}:{self.bus}:{self.device}.{self.function}"

    @property
    def slot(self) -> str:
        return f"{self.domain}:{self.bus}:{self.device}"

    def info(self) -> dict[str, str]:
        """The PCI attach-handle / control-path shape of api.md §6.5."""
        return {"bus": self.bus, "device": self.device, "domain": self.domain, "function": self.function}


def read_text(path: Path, *, device: str = "") -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise DriverFailure("missing sysfs file", device=device, file=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DriverFailure(f"unreadable sysfs file: {exc.__class__.__name__}", device=device,
                            file=path) from None


def read_int(path: Path, *, device: str = "", base: int = 10) -> int:
    text = read_text(path, device=device)
    try:
        return int(text, base)
    except ValueError:
        raise DriverFailure(f"non-numeric value {text[:40]!r}", device=device, file=path) from None


def read_optional(path: Path, *, device: str = "") -> str | None:
    return read_text(path, device=device) if path.exists() or path.is_symlink() else None


def link_target(path: Path, *, device: str = "") -> Path | None:
    """Resolve a symlink; None when absent, a DriverFailure when it points nowhere."""
    if not path.is_symlink():
        return None
    target = path.resolve()
    if not target.exists():
        raise DriverFailure(f"broken symlink -> {os.readlink(path)}", device=device, file=path)
    return target


class PciFunction:
    """One `bus/pci/devices/<address>` entry; every attribute is read lazily and names its file."""

    def __init__(self, sysfs_root: Path, address: str):
        self.root = Path(sysfs_root)
        self.name = address
        self.path = self.root / "bus" / "pci" / "devices" / address
        self.address = PciAddress.parse(address)

    def __repr__(self) -> str:
        return f"PciFunction({self.name})"

    def file(self, name: str) -> Path:
        return self.path / name

    def text(self, name: str) -> str:
        return read_text(self.path / name, device=self.name)

    def optional(self, name: str) -> str | None:
        return read_optional(self.path / name, device=self.name)

    def hex_id(self, name: str) -> str:
        """`vendor`/`device`/`class` files: validated, normalised to lower-case `0x....`."""
        text = self.text(name).lower()
        try:
            int(text, 16)
        except ValueError:
            raise DriverFailure(f"non-hex value {text[:40]!r}", device=self.name, file=self.path / name) from None
        return text if text.startswith("0x") else f"0x{text}"

    @cached_property
    def vendor(self) -> str:
        return self.hex_id("vendor")

    @cached_property
    def device_id(self) -> str:
        return self.hex_id("device")

    @cached_property
    def class_code(self) -> str:
        return self.hex_id("class")

    def int(self, name: str, default: int | None = None) -> int:
        p = self.path / name
        if default is not None and not p.exists():
            return default
        return read_int(p, device=self.name)

    @property
    def numa_node(self) -> int:
        return self.int("numa_node", default=-1)

    @property
    def driver(self) -> str | None:
        target = link_target(self.path / "driver", device=self.name)
        return target.name if target else None

    @property
    def iommu_group(self) -> str | None:
        target = link_target(self.path / "iommu_group", device=self.name)
        return target.name if target else None

    @property
    def is_vf(self) -> bool:
        return (self.path / "physfn").is_symlink()

    @property
    def physfn(self) -> str | None:
        target = link_target(self.path / "physfn", device=self.name)
        return target.name if target else None

    @property
    def total_vfs(self) -> int:
        return self.int("sriov_totalvfs", default=0)

    @property
    def num_vfs(self) -> int:
        return self.int("sriov_numvfs", default=0)

    def virtfns(self) -> list[PciFunction]:
        """VFs in `virtfnN` order; a broken link raises naming that link."""
        links = sorted(self.path.glob("virtfn*"), key=lambda p: int(p.name[6:] or 0))
        out = []
        for link in links:
            target = link_target(link, device=self.name)
            if target is None:  # a plain file where a link should be
                raise DriverFailure("not a symlink", device=self.name, file=link)
            out.append(PciFunction(self.root, target.name))
        return out

    def std_board_info(self) -> dict[str, str]:
        """Standard board facts for `devices.std_board_info` (absent optional files are skipped)."""
        info = {"device_id": self.device_id, "class": self.class_code, "vendor_id": self.vendor}
        for key in ("subsystem_vendor", "subsystem_device"):
            if (self.path / key).exists():
                info[key] = self.hex_id(key)
        info["numa_node"] = str(self.numa_node)
        if (group := self.iommu_group) is not None:
            info["iommu_group"] = group
        info["driver"] = self.driver or ""
        return info


def list_pci(sysfs_root: Path) -> tuple[list[PciFunction], list[DriverFailure]]:
    """All PCI functions under a root, sorted by address, plus failures for entries not even listable."""
    base = Path(sysfs_root) / "bus" / "pci" / "devices"
    funcs: list[PciFunction] = []
    bad: list[DriverFailure] = []
    if not base.is_dir():
        return funcs, bad
    for entry in sorted(base.iterdir()):
        try:
            if entry.is_symlink() and not entry.exists():
                raise DriverFailure(f"broken symlink -> {os.readlink(entry)}", device=entry.name, file=entry)
            funcs.append(PciFunction(sysfs_root, entry.name))
        except DriverFailure as exc:
            bad.append(exc)
    return funcs, bad


def class_prefix(class_code: str, prefix: str) -> bool:
    """`class_code` like 0x030200 starts with `prefix` like 0x0302."""
    return class_code.lower().startswith(prefix.lower())

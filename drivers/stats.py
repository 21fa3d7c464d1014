"""Reading device counters for `Driver.device_stats`: counter files, hwmon sensors, `key value` text.

Every reader returns what it could read and skips what it could not: a missing or odd counter file
costs that counter, never the device's report.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from rayborg.drivers.sysfs import PciAddress

_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


def number(text: str) -> int | float | None:
    text = text.strip()
    if not _NUMBER.match(text):
        return None
    return float(text) if "." in text else int(text)


def pci_dir(sysfs_root: Path, key: str) -> Path:
    """`bus/pci/devices/<address>` of a device key `driver:<address>`."""
    address = key.partition(":")[2]
    PciAddress.parse(address)  # a key that is no PCI address is a bug of the caller: say so
    return Path(sysfs_root) / "bus" / "pci" / "devices" / address


def counter_files(directory: Path, names: Iterable[str], prefix: str = "") -> dict[str, int | float]:
    """`prefix + name` -> the number in `directory/name`, for each of `names` that reads as one."""
    out: dict[str, int | float] = {}
    for name in names:
        try:
            value = number((directory / name).read_text())
        except (OSError, UnicodeDecodeError):
            continue
        if value is not None:
            out[prefix + name] = value
    return out


def hwmon_temperature(directory: Path) -> float | None:
    """degrees Celsius of the first `hwmon*/temp1_input` (millidegrees in sysfs) under `directory`."""
    for sensor in sorted(directory.glob("hwmon*/temp1_input")):
        try:
            value = number(sensor.read_text())
        except (OSError, UnicodeDecodeError):
            continue
        if value is not None:
            return round(value / 1000, 3)
    return None


def key_values(text: str, *, prefix: str = "", limit: int = 24) -> dict[str, int | float]:
    """`name value` (or `name: value`) lines -> {prefix + name: value}: names as stat names, the
    first `limit` numeric ones in the text's order."""
    out: dict[str, int | float] = {}
    for line in text.splitlines():
        parts = line.replace(":", " ").split()
        if len(parts) != 2:
            continue
        name = re.sub(r"[^a-z0-9_]", "_", parts[0].lower())
        value = number(parts[1])
        if value is None or not re.match(r"^[a-z]", name):
            continue
        out[(prefix + name)[:63]] = value
        if len(out) >= limit:
            break
    return out

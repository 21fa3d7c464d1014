"""The selector language of `where=`: `"host=a,family=FPGA|GPU"`, a dict of the same keys, or a list
of deployable names/uuids; parsed to {field: {values}} and matched against the binders' deployable
rows (all keys must match, a key's values are alternatives, traits are all required)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rayborg.python_api.errors import RayborgError

SELECTOR_KEYS = {
    "host": "host",
    "hostname": "host",
    "family": "family",
    "type": "family",
    "rc": "resource_class",
    "resource_class": "resource_class",
    "trait": "trait",
    "state": "state",
    "name": "deployable",
    "deployable": "deployable",
    "device": "device_uuid",
    "driver": "driver",
}


def parse_selector(where: str | dict[str, Any] | Iterable[str] | None) -> dict[str, Any]:
    """`"host=a,family=FPGA"`, a dict with those keys, or a list of deployable names/uuids."""
    if where is None:
        return {}
    if isinstance(where, str):
        out: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in where.split(","))):
            if "=" not in part:
                raise RayborgError(
                    f"bad selector {part!r}: want KEY=VALUE (keys: {', '.join(sorted(SELECTOR_KEYS))})"
                )
            key, value = (x.strip() for x in part.split("=", 1))
            if key.lower() not in SELECTOR_KEYS:
                raise RayborgError(f"unknown selector key {key!r} (keys: {', '.join(sorted(SELECTOR_KEYS))})")
            out.setdefault(SELECTOR_KEYS[key.lower()], set()).update(value.split("|"))
        return out
    if isinstance(where, dict):
        out = {}
        for key, value in where.items():
            if key.lower() not in SELECTOR_KEYS:
                raise RayborgError(f"unknown selector key {key!r} (keys: {', '.join(sorted(SELECTOR_KEYS))})")
            values = {value} if isinstance(value, str) else set(value)
            out.setdefault(SELECTOR_KEYS[key.lower()], set()).update(values)
        return out
    return {"deployable": set(where)}


def matches(row: dict[str, Any], selector: dict[str, Any]) -> bool:
    """Whether a deployable row (`Rayborg.devices`) is selected by a parsed selector."""
    for key, wanted in selector.items():
        wanted = {str(w) for w in wanted}
        if key == "trait":
            if not wanted <= set(row["traits"]):
                return False
        elif key == "deployable":
            if row["deployable"] not in wanted and row["deployable_uuid"] not in wanted:
                return False
        elif key in ("family", "resource_class", "state", "driver"):
            if str(row.get(key) or "").lower() not in {w.lower() for w in wanted}:
                return False
        elif str(row.get(key)) not in wanted:
            return False
    return True

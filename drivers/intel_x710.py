"""Intel X710 NIC driver (wallaby add-x710-driver): each PF is a device, each VF a deployable.

Options mirror the spec's config section `[x710_static]`:
    physical_device_mappings: "physnet1:eth2|eth3,physnet2:eth4"  (or {"physnet1": ["eth2", "eth3"]})
    function_device_mappings: "GTPv1:eth3|eth2"
The PF's interface name (`<pf>/net/<ifname>`) picks its physnet and DDP function, reported as
attributes (`physical_network`, `function`) and traits (CUSTOM_<PHYSNET>, CUSTOM_<FUNCTION>) next to
CUSTOM_VF (or CUSTOM_PF for a PF without VFs). VF attach handles carry `physical_network`.
RC CUSTOM_NIC and ids follow upstream. DDP programming is the spec's later phase: not implemented.
"""

from __future__ import annotations

from typing import Any

from rayborg.drivers.base import DriverDevice, custom_name
from rayborg.drivers.pci import PciDriver
from rayborg.drivers.sysfs import PciFunction


def parse_mappings(value: Any, option: str) -> dict[str, str]:
    """`"name:if1|if2,name2:if3"` or `{"name": ["if1", "if2"]}` -> {ifname: name}; names must be unique."""
    if not value:
        return {}
    pairs: list[tuple[str, list[str]]] = []
    if isinstance(value, dict):
        pairs = [(k, [v] if isinstance(v, str) else list(v)) for k, v in value.items()]
    else:
        for item in str(value).split(","):
            if not item.strip():
                continue
            name, sep, ifaces = item.partition(":")
            if not sep or not name.strip() or not ifaces.strip():
                raise ValueError(f"{option}: bad entry {item.strip()!r} (want name:if1|if2)")
            pairs.append((name.strip(), ifaces.split("|")))
    names = [n for n, _ in pairs]
    if len(names) != len(set(names)):
        raise ValueError(f"{option}: duplicate names in {value!r}")
    out: dict[str, str] = {}
    for name, ifaces in pairs:
        for ifname in (i.strip() for i in ifaces if i.strip()):
            if ifname in out and out[ifname] != name:
                raise ValueError(f"{option}: interface {ifname} is mapped to {out[ifname]!r} and {name!r}")
            out[ifname] = name
    return out


class IntelX710Driver(PciDriver):
    NAME = "intel_x710"
    TYPE = "NIC"
    VENDOR = "0x8086"
    VENDOR_NAME = "INTEL"
    REQUIRES_KERNEL_DRIVER = True
    MODELS = {"0x1572": "X710", "0x1583": "XL710", "0x1584": "XL710", "0x158b": "XXV710"}
    IDS = frozenset(("0x8086", d) for d in MODELS)

    def __init__(self, ctx=None):
        super().__init__(ctx)
        self.physnets = parse_mappings(self.options.get("physical_device_mappings"), "physical_device_mappings")
        self.functions = parse_mappings(self.options.get("function_device_mappings"), "function_device_mappings")

    def build(self, fn: PciFunction) -> DriverDevice:
        net = fn.path / "net"
        ifnames = sorted(p.name for p in net.iterdir()) if net.is_dir() else []
        ifname = ifnames[0] if ifnames else ""
        physnet, function = self.physnets.get(ifname), self.functions.get(ifname)
        extra = {k: v for k, v in (("physical_network", physnet), ("function", function)) if v}
        tail = [custom_name(x) for x in (physnet, function) if x]
        vfs = self.vfs(fn)
        handle_info = {"physical_network": physnet} if physnet else {}
        deps = [self.deployable(f, [self.handle(f, **handle_info)], resource_class="CUSTOM_NIC",
                                traits=[custom_name("VF" if vfs else "PF"), *tail], attributes=extra)
                for f in (vfs or [fn])]
        return self.device(fn, deps, vendor_board_info=ifname, ifname=ifname, vf_count=str(len(vfs)))

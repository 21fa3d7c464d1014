"""Intel X710 NIC driver (wallaby add-x710-driver): each PF is a device, each VF a deployable.

Options mirror the spec's config section `[x710_static]`:
    physical_device_mappings: "physnet1:eth2|eth3,physnet2:eth4"  (or {"physnet1": ["eth2", "eth3"]})
    function_device_mappings: "GTPv1:eth3|eth2"
The PF's interface name (`<pf>/net/<ifname>`) picks its physnet and DDP function, reported as
attributes (`physical_network`, `function`) and traits (CUSTOM_<PHYSNET>, CUSTOM_<FUNCTION>) next to
CUSTOM_VF (or CUSTOM_PF for a PF without VFs). VF attach handles carry `physical_network`.
RC CUSTOM_NIC and ids follow upstream.

Programming (the spec's `program()`): a DDP package (a bitstream of the bitstream spec whose `board`
names the NIC, e.g. X710, and whose `function_name` names the profile, e.g. GTPv1) is loaded on the
PF of the deployable with `ethtool -f <ifname> <package> 100` (i40e's DDP region; option `ddp_tool`,
default /usr/sbin/ethtool). The PF's deployables then report that package as their bitstream and its
profile as their `function` (the kernel does not say which profile is loaded, so like the FPGA
drivers we remember what we loaded). Firmware (`update`): Intel's NVM update tool,
`nvmupdate64e -u -l -c <image: the package's nvmupdate.cfg> -m <PF MAC>` (option `firmware_tool`).
Stats: the PF interface's `statistics/` counters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rayborg.drivers.base import DriverDeployable, DriverDevice, ProgrammingError, custom_name
from rayborg.drivers.bitstreams import Bitstream, program_target
from rayborg.drivers.pci import PciDriver
from rayborg.drivers.stats import counter_files, pci_dir
from rayborg.drivers.sysfs import PciFunction
from rayborg.drivers.tools import DEFAULT_TIMEOUT, run_tool

# The interface counters reported as stats (of /sys/class/net/<if>/statistics): a fixed set, so the
# series per NIC stay bounded.
NET_COUNTERS = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets", "rx_errors", "tx_errors",
                "rx_dropped", "tx_dropped", "multicast", "collisions")
DDP_REGION = "100"  # ethtool -f's region number for a DDP package on i40e


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
        self.loaded: dict[str, Bitstream] = {}  # PF key -> the DDP package this process loaded

    def build(self, fn: PciFunction) -> DriverDevice:
        net = fn.path / "net"
        ifnames = sorted(p.name for p in net.iterdir()) if net.is_dir() else []
        ifname = ifnames[0] if ifnames else ""
        physnet, function = self.physnets.get(ifname), self.functions.get(ifname)
        ddp = self.loaded.get(f"{self.NAME}:{fn.name}")
        if ddp is not None:
            function = ddp.meta.function_name or ddp.meta.bs_name
        extra = {k: v for k, v in (("physical_network", physnet), ("function", function)) if v}
        tail = [custom_name(x) for x in (physnet, function) if x]
        vfs = self.vfs(fn)
        handle_info = {"physical_network": physnet} if physnet else {}
        deps = [self.deployable(f, [self.handle(f, **handle_info)], resource_class="CUSTOM_NIC",
                                traits=[custom_name("VF" if vfs else "PF"), *tail], attributes=extra,
                                bitstream_id=ddp and ddp.image_id)
                for f in (vfs or [fn])]
        return self.device(fn, deps, vendor_board_info=ifname, ifname=ifname, vf_count=str(len(vfs)))

    # ---- stats ----------------------------------------------------------------------------

    def device_stats(self, device: DriverDevice) -> dict[str, int | float]:
        ifname = device.std_board_info.get("ifname")
        if not ifname:
            return {}
        return counter_files(pci_dir(self.ctx.sysfs_root, device.key) / "net" / ifname / "statistics",
                             NET_COUNTERS)

    # ---- programming: DDP packages ----------------------------------------------------------

    def program(self, deployable: DriverDeployable | str, bitstream: Bitstream,
                *, timeout: float | None = None) -> DriverDeployable:
        """Load a DDP package on the deployable's PF (every VF of that PF gets the profile)."""
        device, dep = program_target(self, deployable, bitstream, vendor=self.VENDOR_NAME, what="DDP package")
        ifname = device.std_board_info.get("ifname")
        tool = str(self.options.get("ddp_tool", "/usr/sbin/ethtool"))
        if not ifname:
            raise ProgrammingError("the PF has no network interface to load a DDP package through "
                                   "(is i40e bound?)", device=device.key, tool=tool)
        if timeout is None:
            timeout = self.seconds_option("program_timeout", DEFAULT_TIMEOUT, device=device.key, tool=tool)
        run_tool([tool, "-f", ifname, str(bitstream.path), DDP_REGION], device=device.key, timeout=timeout)
        self.loaded[device.key] = bitstream
        _, dep = self.find_deployable(dep.name)
        return dep

    # ---- firmware ---------------------------------------------------------------------------

    def update(self, device: DriverDevice, image_path: Path, *, timeout: float | None = None) -> str:
        """Flash the NVM with Intel's nvmupdate64e, the adapter picked by its PF's MAC address."""
        tool = str(self.options.get("firmware_tool", "/usr/sbin/nvmupdate64e"))
        ifname = device.std_board_info.get("ifname")
        try:
            mac = (pci_dir(self.ctx.sysfs_root, device.key) / "net" / str(ifname) / "address").read_text().strip()
        except OSError:
            mac = ""
        if not ifname or not mac:
            raise ProgrammingError("no MAC address to select the adapter by (net/<if>/address)",
                                   device=device.key, tool=tool)
        if timeout is None:
            timeout = self.seconds_option("firmware_timeout", DEFAULT_TIMEOUT, device=device.key, tool=tool)
        return run_tool([tool, "-u", "-l", "-c", str(image_path), "-m", mac.replace(":", "")],
                        device=device.key, timeout=timeout)

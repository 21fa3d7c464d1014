"""Intel FPGA (OPAE) driver: PF/VF tree, PR region id, loaded AFU (function) id, fpgaconf programming.

Spec: queens cyborg-fpga-driver-proposal (discovery of PF/VF, regions, `program()`), rocky agent-driver
API (region/function traits). Trait spellings follow the latest implemented form (train
nova-placement / upstream): CUSTOM_FPGA_INTEL, CUSTOM_FPGA_INTEL_<FAMILY>, CUSTOM_FPGA_REGION_INTEL_<ID>,
CUSTOM_FPGA_FUNCTION_ID_INTEL_<ID>; RC FPGA (standard since Train).

Sysfs read: `bus/pci/devices/<pf>` (vendor/device, virtfn*), and for region/function both the
OPAE `intel-fpga` layout (`fpga/intel-fpga-dev.N/intel-fpga-fme.N/pr/interface_id`,
`.../intel-fpga-port.N/afu_id`) and the upstream-kernel DFL layout (`fpga_region/regionN/dfl-fme.N/
.../compat_id`, `.../dfl-port.N/afu_id`). The port (and its afu_id) moves to the VF when VFs exist.

Partial reconfiguration (queens fpga-model / fpga-driver specs: `pr_num`, a card's `regions`): a card
whose FME shows more than one port (several `dfl-port.N` / `intel-fpga-port.N` on the PF and its VFs)
is a nested tree: a parent deployable for the whole FPGA (its static region; no accelerators, no
handles, vendor/family traits) with one child per PR region (`<parent>_region<port id>`), each with
one accelerator, the PCI handle of the function that carries its port, and its own region (the
matching `dfl-fme-region.N`'s compat_id, N in port order) and function (the port's afu_id) traits.
Programming a region runs fpgaconf on the function that carries its port; the loaded image is
remembered per region. A card with one port is one deployable, as before.
"""

from __future__ import annotations

from pathlib import Path

from rayborg.drivers.base import DriverDeployable, DriverDevice
from rayborg.drivers.fpga import FpgaDriver
from rayborg.drivers.sysfs import PciFunction, read_text

REGION_GLOBS = ("fpga/*/intel-fpga-fme.*/pr/interface_id",
                "fpga_region/*/dfl-fme.*/dfl-fme-region.*/fpga_region/*/compat_id")
FUNCTION_GLOBS = ("fpga/*/intel-fpga-port.*/afu_id", "fpga_region/*/dfl-port.*/afu_id")
PORT_GLOBS = ("fpga/*/intel-fpga-port.*", "fpga_region/*/dfl-port.*")
# one FPGA region per port under the DFL FME (OPAE's layout has one PR interface id for all ports)
PR_REGION_GLOBS = ("fpga_region/*/dfl-fme.*/dfl-fme-region.*",)


def _suffix(path: Path) -> int:
    tail = path.name.rsplit(".", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _ports(functions: list[PciFunction]) -> list[tuple[int, PciFunction, Path]]:
    """(port id, function carrying it, port dir) of every accelerator port, in port-id order; the id is
    the port's `id` file where it has one, else its instance number."""
    found = []
    for fn in functions:
        for pattern in PORT_GLOBS:
            for port in fn.path.glob(pattern):
                raw = read_text(port / "id", device=fn.name) if (port / "id").is_file() else None
                found.append((int(raw, 0) if raw and raw.strip().isdigit() else _suffix(port), fn, port))
    return sorted(found, key=lambda p: (p[0], p[1].name))


def _region_ids(fn: PciFunction) -> list[str]:
    """The compat_id of each of the FME's PR regions, in instance order."""
    regions = sorted((r for pattern in PR_REGION_GLOBS for r in fn.path.glob(pattern)), key=_suffix)
    out = []
    for region in regions:
        compat = sorted(region.glob("fpga_region/*/compat_id"))
        if compat:
            out.append(read_text(compat[0], device=fn.name).lower())
    return out


def _first(fn: PciFunction, patterns: tuple[str, ...]) -> str | None:
    for pattern in patterns:
        for path in sorted(fn.path.glob(pattern)):
            return read_text(path, device=fn.name).lower()
    return None


class IntelFpgaDriver(FpgaDriver):
    NAME = "intel_fpga"
    VENDOR = "0x8086"
    VENDOR_NAME = "INTEL"
    DEFAULT_TOOL = "/usr/bin/fpgaconf"
    REQUIRES_KERNEL_DRIVER = True
    MODELS = {"0x09c4": "PAC_ARRIA10", "0xbcc0": "PAC_ARRIA10", "0x0b2b": "PAC_D5005", "0x0b30": "PAC_N3000"}
    IDS = frozenset(("0x8086", d) for d in MODELS)

    def __init__(self, ctx=None):
        super().__init__(ctx)
        # region deployable name -> (function carrying its port, loaded-image key); rebuilt by discovery
        self.regions: dict[str, tuple[PciFunction, str]] = {}

    def discover(self):
        self.regions = {}
        return super().discover()

    def build(self, fn: PciFunction) -> DriverDevice:
        vfs = self.vfs(fn)
        ports = _ports([fn, *vfs])
        if len(ports) > 1:
            return self._build_nested(fn, vfs, ports)
        region = _first(fn, REGION_GLOBS)
        # with VFs the accelerator port sits on a VF; take the first that has one
        function = next((f for f in (_first(x, FUNCTION_GLOBS) for x in [fn, *vfs]) if f), None)
        key = f"{self.NAME}:{fn.name}"
        bitstream_id, function = self.loaded_state(key, function)
        handles = [self.handle(vf) for vf in vfs] or [self.handle(fn)]
        model = self.model_of(fn)
        extra = {k: v for k, v in (("region_id", region), ("function_id", function)) if v}
        dep = self.deployable(fn, handles, resource_class="FPGA", bitstream_id=bitstream_id,
                              traits=self.fpga_traits(family=model, region=region, function=function),
                              attributes=extra)
        stub = not any((fn.path / d).is_dir() for d in ("fpga", "fpga_region"))
        return self.device(fn, [dep], model=model, stub=stub, pr_num="1" if region else "0",
                           vf_count=str(len(vfs)))

    def _build_nested(self, fn: PciFunction, vfs: list[PciFunction],
                      ports: list[tuple[int, PciFunction, Path]]) -> DriverDevice:
        key, model = f"{self.NAME}:{fn.name}", self.model_of(fn)
        region_ids = _region_ids(fn)
        shared = _first(fn, REGION_GLOBS[:1])  # OPAE layout: one interface id for every port
        parent = self.deployable(fn, [], num=0, resource_class="FPGA", traits=self.fpga_traits(family=model))
        children = []
        for index, (port_id, carrier, port) in enumerate(ports):
            region = region_ids[index] if index < len(region_ids) else shared
            afu = port / "afu_id"
            function = read_text(afu, device=carrier.name).lower() if afu.is_file() else None
            name = self.ctx.dep_name(f"{fn.name}_region{port_id}")
            loaded_key = f"{key}:region{port_id}"
            self.regions[name] = (carrier, loaded_key)
            bitstream_id, function = self.loaded_state(loaded_key, function)
            extra = {k: v for k, v in (("region_id", region), ("function_id", function)) if v}
            children.append(DriverDeployable(
                name=name, driver_name=self.NAME, num_accelerators=1, resource_class="FPGA",
                traits=self.fpga_traits(family=model, region=region, function=function),
                bitstream_id=bitstream_id, attributes=extra, attach_handles=[self.handle(carrier)]))
        parent.children = sorted(children, key=lambda d: d.name)
        return self.device(fn, [parent], model=model, pr_num=str(len(ports)), vf_count=str(len(vfs)))

    def loaded_key(self, device: DriverDevice, dep: DriverDeployable) -> str:
        region = self.regions.get(dep.name)
        return region[1] if region else device.key

    def program_argv_for(self, device: DriverDevice, dep: DriverDeployable, image: Path) -> list[str]:
        """A PR region is programmed through the function that carries its port (the driver spec's
        "BDF of PF/VF"); a whole card through its PF."""
        region = self.regions.get(dep.name)
        if region is None:
            return self.program_argv(device, image)
        a = region[0].address
        return [self.tool(), "--segment", f"0x{a.domain}", "--bus", f"0x{a.bus}",
                "--device", f"0x{a.device}", "--function", f"0x{a.function}", str(image)]

    def program_argv(self, device: DriverDevice, image: Path) -> list[str]:
        c = device.controlpath_id.cpid_info
        return [self.tool(), "--segment", f"0x{c['domain']}", "--bus", f"0x{c['bus']}",
                "--device", f"0x{c['device']}", "--function", f"0x{c['function']}", str(image)]

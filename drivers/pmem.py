"""Intel PMEM namespace driver (2023.1 pmem-namespace-support, approved, never implemented upstream).

Reads what `ndctl list` would print from sysfs: `bus/nd/devices/region*`, `namespace*` (mode, size,
alt_name, uuid) and `dax*` (whose `namespace` file names its namespace; its device-dax child, e.g.
`region0/dax0.0/dax0.0`, is the character device `/dev/dax0.0`). The kernel's `mode` file says `dax`
/ `memory` / `safe` / `raw` where ndctl says devdax / fsdax / sector / raw; both are read. Only devdax
namespaces are usable as vPMEM backends; idle seeds (size 0, empty `namespace`) are skipped.
Option `pmem_namespaces = "6GB:ns0|ns1|ns2,LARGE:ns3"` (names = alt_name) groups namespaces
under labels; without it the label is the size ("6GB").

Conflict resolved: the spec wants RC CUSTOM_PMEM_NAMESPACE_<LABEL> *and* one deployable per device;
an RP has one inventory per RC, so we make one deployable per (region, label). One PMEM attach handle
(a rayborg type: the spec asks for one without naming it) per namespace; its info, what a Bound ARQ
shows as `attach_handle_info`: {"dev": "/dev/dax0.0", "name": <alt_name>, "namespace": "namespace0.0",
"size": <bytes>, "uuid": <namespace uuid>}. Example host: drivers/fixture_trees/pmem.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from rayborg.drivers.base import (ControlPathId, Discovery, Driver, DriverAttachHandle, DriverDeployable,
                                  DriverDevice, DriverFailure, custom_name)
from rayborg.drivers.intel_x710 import parse_mappings
from rayborg.drivers.sysfs import read_int, read_text


# the kernel's names for a namespace's mode -> ndctl's (which the spec and operators use)
KERNEL_MODES = {"dax": "devdax", "memory": "fsdax", "safe": "sector", "raw": "raw"}


def namespace_mode(text: str) -> str:
    return KERNEL_MODES.get(text, text)


def chardev(nd_dax: Path) -> str:
    """The device-dax under an nd_dax device (its /dev name): `<nd_dax>/daxR.N` (dax bus) or
    `<nd_dax>/dax/daxR.N` (older kernels' dax class); the nd_dax's own name when neither is there."""
    for where in (nd_dax, nd_dax / "dax"):
        found = sorted(p.name for p in where.glob("dax*.*") if p.is_dir()) if where.is_dir() else []
        if found:
            return found[0]
    return nd_dax.name


def size_label(size: int) -> str:
    gib = size / 2**30
    return f"{gib:g}GB" if gib >= 1 else f"{size // 2**20}MB"


class PmemDriver(Driver):
    NAME = "pmem"
    TYPE = "PMEM"
    VENDOR = "0x8086"

    def __init__(self, ctx=None):
        super().__init__(ctx)
        self.labels = parse_mappings(self.options.get("pmem_namespaces"), "pmem_namespaces")  # ns -> label

    def discover(self) -> Discovery:
        base = self.ctx.sysfs_root / "bus" / "nd" / "devices"
        result = Discovery()
        if not base.is_dir():
            return result
        daxes = {}
        for dax in sorted(base.glob("dax*")):
            try:
                if owner := read_text(dax / "namespace", device=dax.name):  # empty: an idle seed
                    daxes[owner] = chardev(dax.resolve())
            except DriverFailure as exc:
                result.errors.append(self.error(exc))
        by_region: dict[str, list[tuple[str, Path]]] = defaultdict(list)
        for ns in sorted(base.glob("namespace*")):
            if not ns.exists():
                result.errors.append(self.error(DriverFailure("broken symlink", device=ns.name, file=ns)))
                continue
            by_region[ns.resolve().parent.name].append((ns.name, ns))
        seen: set[str] = set()
        for region in sorted(by_region):
            try:
                device = self._region(region, base / region, by_region[region], daxes, seen)
                if device is not None:
                    result.devices.append(device)
            except DriverFailure as exc:
                result.errors.append(self.error(exc, device=region))
        for missing in sorted(set(self.labels) - seen):
            result.errors.append(self.error(DriverFailure(
                f"namespace {missing!r} of pmem_namespaces not found (or not devdax)", device=missing)))
        return result

    def _region(self, region: str, rdir: Path, namespaces, daxes, seen: set[str]) -> DriverDevice | None:
        groups: dict[str, list[DriverAttachHandle]] = defaultdict(list)
        for name, ns in namespaces:
            if namespace_mode(read_text(ns / "mode", device=name)) != "devdax":
                continue
            size = read_int(ns / "size", device=name)
            if size == 0:  # an idle seed namespace
                continue
            alt = read_text(ns / "alt_name", device=name) if (ns / "alt_name").exists() else ""
            if self.labels and alt not in self.labels:
                continue  # configured hosts expose only the namespaces they list
            seen.add(alt)
            if name not in daxes:
                raise DriverFailure("devdax namespace without a dax device", device=name, file=ns / "mode")
            label = self.labels.get(alt) or size_label(size)
            groups[label].append(DriverAttachHandle(attach_type="PMEM", attach_info={
                "dev": str(self.ctx.dev_root / daxes[name]), "namespace": name, "name": alt,
                "size": str(size), "uuid": read_text(ns / "uuid", device=name)}))
        if not groups:
            return None
        deps = [DriverDeployable(name=self.ctx.dep_name(f"{region}_{label}"), num_accelerators=len(handles),
                                 driver_name=self.NAME, resource_class=custom_name("PMEM_NAMESPACE", label),
                                 traits=[custom_name("PMEM_NAMESPACE", label)], attach_handles=handles)
                for label, handles in sorted(groups.items())]
        numa = str(read_int(rdir / "numa_node", device=region)) if (rdir / "numa_node").exists() else "-1"
        return DriverDevice(type="PMEM", vendor=self.VENDOR, model="NVDIMM region", key=f"{self.NAME}:{region}",
                            std_board_info={"region": region, "numa_node": numa},
                            controlpath_id=ControlPathId(cpid_type="PMEM", cpid_info={"region": region}),
                            deployables=deps)

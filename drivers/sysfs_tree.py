"""Sysfs trees from Python calls or from a short JSON description (the "tree.json" format).

`rayborg discover --sysfs-root DIR/tree.json` replays a description, `--compare-nvidia-smi --out`
captures a host as one, and tests build their hosts with it. The layout mimics the kernel's: real
directories under `devices/pci<dom>:<bus>/<addr>`, with `bus/pci/devices/<addr>` symlinks to them;
relative `driver`, `iommu_group`, `physfn`/`virtfnN` links; `class/mdev_bus/<addr>` and
`bus/mdev/devices/<uuid>`; `bus/nd/devices/{region,namespace,dax}*`.

`fixture_tree(driver, root)` expands the example host shipped for each driver (fixture_trees/<driver>/
tree.json, package data, so it works from an installed wheel too).

JSON description:
    {"pci": [{"address": "0000:5e:00.0", "vendor": "0x8086", "device": "0x09c4",
              "class": "0x120000", "driver": "intel-fpga-pci", "numa_node": 0, "iommu_group": 5,
              "vfs": {"addresses": [...] | "first": "0000:5e:00.1", "count": 2,
                      "device": "0x09c5", "driver": "vfio-pci"},
              "net": "eth2", "files": {"rel/path": "content"},
              "mdev_types": {"nvidia-223": {"name": "GRID T4-2B", "available_instances": 8}},
              "mdevs": [{"type": "nvidia-223", "uuid": "..."}]}],
     "nd": [{"region": "region0", "numa_node": 0,
             "namespaces": [{"name": "namespace0.0", "mode": "devdax", "size": 6442450944,
                             "alt_name": "ns0", "uuid": "..."}]}],
     "files": {"rel/path": "content"}, "links": {"rel/path": "target"}}
"""

from __future__ import annotations

import json
import os
import uuid as uuidlib
from pathlib import Path
from typing import Any

from rayborg.drivers.sysfs import PciAddress

FIXTURE_TREES = Path(__file__).resolve().parent / "fixture_trees"


def _rel_link(link: Path, target: Path, *, replace: bool = True) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if replace and (link.is_symlink() or link.exists()):
        link.unlink()
    os.symlink(os.path.relpath(target, link.parent), link)


def next_address(addr: str, step: int = 1) -> str:
    """The address `step` functions later (function 0-7, then the next device number)."""
    a = PciAddress.parse(addr)
    n = int(a.device, 16) * 8 + int(a.function) + step
    return f"{a.domain}:{a.bus}:{n // 8:02x}.{n % 8}"


class SysfsBuilder:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    # ---- generic files ---------------------------------------------------------------------

    def write(self, rel: str | Path, content: Any) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{content}\n")
        return path

    def link(self, rel: str | Path, target_rel: str | Path) -> Path:
        link = self.root / rel
        _rel_link(link, self.root / target_rel)
        return link

    # ---- breaking things (bad-input tests) ----------------------------------------------------

    def unreadable(self, rel: str | Path) -> Path:
        """Replace a file by a directory: reading it fails like an unreadable file (tests run as root)."""
        path = self.root / rel
        if path.is_symlink() or path.exists():
            path.unlink()
        path.mkdir(parents=True)
        return path

    def broken_link(self, rel: str | Path) -> Path:
        """Make `rel` a symlink that points nowhere (a driver unloaded, a device gone mid-read)."""
        path = self.root / rel
        if path.is_symlink() or path.exists():
            path.unlink()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to("nowhere-gone")
        return path

    def device_dir(self, address: str) -> Path:
        a = PciAddress.parse(address)
        return self.root / "devices" / f"pci{a.domain}:{a.bus}" / address

    # ---- PCI --------------------------------------------------------------------------------

    def pci(self, address: str, *, vendor: str, device: str, cls: str = "0x120000",
            driver: str | None = None, numa_node: int | None = 0, iommu_group: int | None = None,
            subsystem_vendor: str | None = None, subsystem_device: str | None = None,
            total_vfs: int | None = None, files: dict[str, Any] | None = None) -> Path:
        d = self.device_dir(address)
        d.mkdir(parents=True, exist_ok=True)
        values = {"vendor": vendor, "device": device, "class": cls, "numa_node": numa_node,
                  "subsystem_vendor": subsystem_vendor, "subsystem_device": subsystem_device,
                  "sriov_totalvfs": total_vfs, "sriov_numvfs": 0 if total_vfs is not None else None}
        for name, value in values.items():
            if value is not None:
                (d / name).write_text(f"{value}\n")
        (d / "uevent").write_text(f"PCI_SLOT_NAME={address}\nPCI_ID={vendor[2:].upper()}:{device[2:].upper()}\n")
        _rel_link(self.root / "bus" / "pci" / "devices" / address, d)
        if driver:
            drv = self.root / "bus" / "pci" / "drivers" / driver
            drv.mkdir(parents=True, exist_ok=True)
            _rel_link(d / "driver", drv)
            _rel_link(drv / address, d)
        if iommu_group is not None:
            grp = self.root / "kernel" / "iommu_groups" / str(iommu_group)
            (grp / "devices").mkdir(parents=True, exist_ok=True)
            _rel_link(d / "iommu_group", grp)
            _rel_link(grp / "devices" / address, d)
        for rel, content in (files or {}).items():
            self.write(d.relative_to(self.root) / rel, content)
        return d

    def vfs(self, pf: str, addresses: list[str], *, device: str, driver: str | None = None,
            cls: str | None = None, total_vfs: int | None = None) -> list[Path]:
        pf_dir = self.device_dir(pf)
        vendor = (pf_dir / "vendor").read_text().strip()
        cls = cls or (pf_dir / "class").read_text().strip()
        numa = (pf_dir / "numa_node").read_text().strip() if (pf_dir / "numa_node").exists() else None
        total = max(total_vfs or 0, len(addresses))
        (pf_dir / "sriov_totalvfs").write_text(f"{total}\n")
        (pf_dir / "sriov_numvfs").write_text(f"{len(addresses)}\n")
        out = []
        for i, addr in enumerate(addresses):
            d = self.pci(addr, vendor=vendor, device=device, cls=cls, driver=driver,
                         numa_node=int(numa) if numa else None)
            _rel_link(d / "physfn", pf_dir)
            _rel_link(pf_dir / f"virtfn{i}", d)
            out.append(d)
        return out

    def net(self, address: str, ifname: str) -> Path:
        d = self.device_dir(address) / "net" / ifname
        d.mkdir(parents=True, exist_ok=True)
        (d / "ifindex").write_text("1\n")
        _rel_link(self.root / "class" / "net" / ifname, d)
        return d

    # ---- mdev (vGPU) ---------------------------------------------------------------------

    def mdev_types(self, address: str, types: dict[str, dict[str, Any]]) -> None:
        d = self.device_dir(address)
        for type_id, props in types.items():
            t = d / "mdev_supported_types" / type_id
            (t / "devices").mkdir(parents=True, exist_ok=True)
            values = {"name": type_id, "available_instances": 1, "device_api": "vfio-pci",
                      "description": "num_heads=4, frl_config=60, framebuffer=2048M"} | props
            for name, value in values.items():
                (t / name).write_text(f"{value}\n")
            (t / "create").write_text("")
        _rel_link(self.root / "class" / "mdev_bus" / address, d)

    def mdev(self, address: str, type_id: str, mdev_uuid: str | None = None) -> str:
        """An existing mdev: consumes one available instance, as the kernel does."""
        mdev_uuid = mdev_uuid or str(uuidlib.uuid4())
        d = self.device_dir(address)
        t = d / "mdev_supported_types" / type_id
        m = d / mdev_uuid
        m.mkdir(parents=True, exist_ok=True)
        (m / "remove").write_text("")
        _rel_link(m / "mdev_type", t)
        _rel_link(t / "devices" / mdev_uuid, m)
        _rel_link(self.root / "bus" / "mdev" / "devices" / mdev_uuid, m)
        avail = t / "available_instances"
        avail.write_text(f"{max(0, int(avail.read_text()) - 1)}\n")
        return mdev_uuid

    # ---- NVDIMM (PMEM) -------------------------------------------------------------------

    def nd_region(self, region: str, *, numa_node: int = 0, size: int = 0) -> Path:
        d = self.root / "devices" / "LNXSYSTM:00" / "ndbus0" / region
        d.mkdir(parents=True, exist_ok=True)
        (d / "numa_node").write_text(f"{numa_node}\n")
        (d / "size").write_text(f"{size}\n")
        (d / "devtype").write_text("nd_pmem\n")
        _rel_link(self.root / "bus" / "nd" / "devices" / region, d)
        return d

    def nd_namespace(self, region: str, name: str, *, mode: str = "devdax", size: int = 0,
                     alt_name: str = "", ns_uuid: str | None = None, dax: str | None = None) -> Path:
        r = self.root / "devices" / "LNXSYSTM:00" / "ndbus0" / region
        d = r / name
        d.mkdir(parents=True, exist_ok=True)
        for key, value in {"mode": mode, "size": size, "alt_name": alt_name,
                           "uuid": ns_uuid or str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, name)),
                           "devtype": "nd_namespace_pmem"}.items():
            (d / key).write_text(f"{value}\n")
        _rel_link(self.root / "bus" / "nd" / "devices" / name, d)
        if mode in ("devdax", "dax"):  # ndctl's name, the kernel's: an nd_dax device and its device-dax
            dax = dax or "dax" + name.removeprefix("namespace")
            x = r / dax
            (x / dax).mkdir(parents=True, exist_ok=True)
            (x / dax / "size").write_text(f"{size}\n")
            (x / "namespace").write_text(f"{name}\n")
            _rel_link(self.root / "bus" / "nd" / "devices" / dax, x)
        return d

    # ---- JSON descriptions -----------------------------------------------------------------

    def apply(self, desc: dict[str, Any]) -> SysfsBuilder:
        for dev in desc.get("pci", []):
            self._apply_pci(dev)
        for region in desc.get("nd", []):
            self.nd_region(region["region"], numa_node=region.get("numa_node", 0), size=region.get("size", 0))
            for ns in region.get("namespaces", []):
                self.nd_namespace(region["region"], ns["name"], mode=ns.get("mode", "devdax"),
                                  size=ns.get("size", 0), alt_name=ns.get("alt_name", ""),
                                  ns_uuid=ns.get("uuid"), dax=ns.get("dax"))
        for rel, content in desc.get("files", {}).items():
            self.write(rel, content)
        for rel, target in desc.get("links", {}).items():
            self.link(rel, target)
        return self

    def _apply_pci(self, dev: dict[str, Any]) -> None:
        addr = dev["address"]
        self.pci(addr, vendor=dev["vendor"], device=dev["device"], cls=dev.get("class", "0x120000"),
                 driver=dev.get("driver"), numa_node=dev.get("numa_node", 0), iommu_group=dev.get("iommu_group"),
                 subsystem_vendor=dev.get("subsystem_vendor"), subsystem_device=dev.get("subsystem_device"),
                 total_vfs=dev.get("total_vfs"), files=dev.get("files"))
        if vfs := dev.get("vfs"):
            addresses = vfs.get("addresses") or [next_address(vfs["first"], i) for i in range(vfs["count"])]
            vf_dirs = self.vfs(addr, addresses, device=vfs["device"], driver=vfs.get("driver"),
                               total_vfs=vfs.get("total"))
            for vf_dir, vf_addr in zip(vf_dirs, addresses):
                for rel, content in vfs.get("files", {}).get(vf_addr, {}).items():
                    self.write(vf_dir.relative_to(self.root) / rel, content)
        if net := dev.get("net"):
            self.net(addr, net)
        if types := dev.get("mdev_types"):
            self.mdev_types(addr, types)
        for m in dev.get("mdevs", []):
            self.mdev(addr, m["type"], m.get("uuid"))


def build_tree(root: str | Path, desc: dict[str, Any] | str | Path) -> Path:
    """Expand a description (dict, JSON text, or a JSON file) into a sysfs tree at `root`."""
    if isinstance(desc, Path) or (isinstance(desc, str) and not desc.lstrip().startswith("{")):
        desc = json.loads(Path(desc).read_text())
    elif isinstance(desc, str):
        desc = json.loads(desc)
    SysfsBuilder(root).apply(desc)
    return Path(root)


def fixture_tree(driver: str, root: str | Path) -> Path:
    """Expand the example host of `driver` (a name of drivers/registry.py: the devices that driver
    claims, e.g. "intel_fpga") into `root`."""
    desc = FIXTURE_TREES / driver / "tree.json"
    if not desc.is_file():
        raise ValueError(f"no example host for driver {driver!r}; there are: {', '.join(fixture_tree_drivers())}")
    return build_tree(root, desc)


def fixture_tree_drivers() -> list[str]:
    """The drivers that have an example host."""
    return sorted(p.parent.name for p in FIXTURE_TREES.glob("*/tree.json"))



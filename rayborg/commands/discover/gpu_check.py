"""Check the NVIDIA GPU drivers against `nvidia-smi -q -x` on a GPU host, and capture a fixture of it.

Run as `rayborg discover --compare-nvidia-smi [--out DIR]`: the command discovers, this module does
the rest. nvidia-smi is the reference: every GPU it lists must be in the report at the same PCI
address with the same vendor/device (and subsystem) ids and a model name that fits its product name,
and the report must hold no GPU that nvidia-smi does not list. With `--out DIR` it also writes the
report, nvidia-smi's log (serials and UUIDs replaced), the comparison, and the sysfs files the drivers
read as DIR/sysfs (a tree) and DIR/tree.json (rayborg.drivers.sysfs_tree's format), then
re-discovers both to prove they reproduce the report's GPUs, so they can be committed as a fixture.
Exit codes: 0 agree, 1 differ, 2 the check could not run (`CheckError`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rayborg.drivers.base import DriverFailure, HostReport
from rayborg.drivers.sysfs import PciFunction, list_pci

NVIDIA_DRIVERS = ("nvidia_gpu", "nvidia_vgpu")  # every GPU nvidia-smi lists is one of theirs
NVIDIA_VENDOR = "0x10de"
HOST_PLACEHOLDER = "gpu-host"  # the report's (and deployable names') host name in a capture
SMI_TIMEOUT = 120.0  # `-q` on 8 GPUs without persistence mode takes tens of seconds
# what PciFunction reads from a function's directory (plus sriov_*), and the links it follows (plus virtfn*)
CAPTURED_FILES = ("vendor", "device", "class", "subsystem_vendor", "subsystem_device", "numa_node")
CAPTURED_LINKS = ("driver", "iommu_group", "physfn")
MDEV_TYPE_FILES = ("name", "available_instances", "device_api", "description")  # nvidia_vgpu's reads
# nvidia-smi elements that identify the board, its owner or its users
_SECRET = re.compile(r"<(serial|[a-z_]*uuid|process_name|vm_name|vm_id)>([^<]*)</\1>")


class CheckError(Exception):
    """The check could not run: nvidia-smi missing, failing or unparsable, or a bad --out (exit code 2)."""


@dataclass(frozen=True)
class SmiGpu:
    """One `<gpu>` of nvidia-smi's XML log, in sysfs's spelling (lower-case hex, `0x` ids)."""

    address: str
    vendor_id: str
    device_id: str
    product_name: str
    subsystem_vendor: str | None = None
    subsystem_device: str | None = None
    numa_node: int | None = None
    mig_mode: str | None = None
    virtualization_mode: str | None = None


# ---- nvidia-smi ---------------------------------------------------------------------------------


def bus_id(text: str) -> str:
    """`00000000:17:00.0` (nvidia-smi's 32-bit domain; old drivers print 4 digits) -> `0000:17:00.0`."""
    m = re.fullmatch(r"([0-9a-fA-F]{4,8}):([0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7])", text.strip())
    if not m:
        raise CheckError(f"malformed PCI bus id {text!r} in nvidia-smi's log")
    return f"{int(m[1], 16):04x}:{m[2].lower()}"


def pci_ids(text: str, where: str = "") -> tuple[str, str]:
    """`233510DE` or `0x233510DE` (device in the high 16 bits, vendor low) -> ('0x10de', '0x2335')."""
    try:
        value = int(text.strip(), 16)
    except ValueError:
        raise CheckError(f"malformed PCI id {text!r} in nvidia-smi's log{f' (GPU {where})' if where else ''}") from None
    return f"0x{value & 0xFFFF:04x}", f"0x{(value >> 16) & 0xFFFF:04x}"


def _text(el: ET.Element, path: str) -> str | None:
    found = el.find(path)
    text = (found.text or "").strip() if found is not None else ""
    return text if text and text != "N/A" else None


def parse_nvidia_smi(text: str) -> tuple[str, list[SmiGpu]]:
    """`nvidia-smi -q -x` -> (driver version, GPUs in the log's order)."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise CheckError(f"nvidia-smi printed no XML log ({exc})") from None
    if root.tag != "nvidia_smi_log":
        raise CheckError(f"nvidia-smi printed <{root.tag}>, not <nvidia_smi_log>")
    gpus = []
    for gpu in root.findall("gpu"):
        where = _text(gpu, "pci/pci_bus_id") or gpu.get("id") or ""
        ids = _text(gpu, "pci/pci_device_id")
        if not ids:
            raise CheckError(f"GPU {where or '?'} has no pci_device_id in nvidia-smi's log")
        vendor, device = pci_ids(ids, where)
        sub = _text(gpu, "pci/pci_sub_system_id")
        sub_vendor, sub_device = pci_ids(sub, where) if sub else (None, None)
        numa = _text(gpu, ".//numa_node")  # only some drivers print it
        gpus.append(SmiGpu(bus_id(where), vendor, device, _text(gpu, "product_name") or "", sub_vendor, sub_device,
                           int(numa) if numa and numa.lstrip("-").isdigit() else None,
                           _text(gpu, "mig_mode/current_mig"),
                           _text(gpu, "gpu_virtualization_mode/virtualization_mode")))
    return _text(root, "driver_version") or "", gpus


def run_nvidia_smi(tool: str = "nvidia-smi", timeout: float = SMI_TIMEOUT) -> str:
    """stdout of `<tool> -q -x`; a CheckError of one line when the tool is missing, fails or hangs."""
    path = shutil.which(tool)
    if path is None:
        where = "" if os.sep in tool else " on PATH"
        raise CheckError(f"nvidia-smi not found: no executable {tool!r}{where} (install the NVIDIA driver "
                         "or pass --nvidia-smi PATH)")
    try:
        proc = subprocess.run([path, "-q", "-x"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              errors="replace", timeout=timeout)
    except subprocess.TimeoutExpired:
        raise CheckError(f"{tool} -q -x hung: killed after {timeout:g}s") from None
    except OSError as exc:
        raise CheckError(f"{tool} could not run: {exc.strerror or exc}") from None
    if proc.returncode != 0:  # e.g. "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver"
        said = next((ln.strip() for ln in (proc.stderr + "\n" + proc.stdout).splitlines() if ln.strip()), "")
        raise CheckError(f"{tool} -q -x failed (exit code {proc.returncode}){': ' + said if said else ''}")
    return proc.stdout


def anonymise_xml(text: str) -> str:
    """Serials, UUIDs, process and VM names -> fixed placeholders (one per distinct value); the rest of
    the log is kept byte for byte."""
    seen: dict[tuple[str, str], str] = {}

    def swap(m: re.Match[str]) -> str:
        tag, value = m[1], m[2].strip()
        if value in ("", "N/A", "None"):
            return m[0]
        if (tag, value) not in seen:
            n = sum(1 for t, _ in seen if t == tag)
            prefix = value.split("-", 1)[0] + "-" if re.match(r"[A-Z]+-", value) else ""  # GPU-..., MIG-...
            seen[tag, value] = (f"{n:013d}" if tag == "serial" else
                                f"{prefix}00000000-0000-0000-0000-{n:012d}" if tag.endswith("uuid") else f"{tag}-{n}")
        return f"<{tag}>{seen[tag, value]}</{tag}>"

    return _SECRET.sub(swap, text)


# ---- comparison ------------------------------------------------------------------------------


def _words(name: str) -> list[str]:
    return [w for w in re.split(r"[^A-Z0-9]+", name.upper()) if w and w not in ("NVIDIA", "TESLA")]


def model_fits(model: str, product: str) -> bool:
    """The driver's model ('H200-SXM-141GB', pci.ids style) and nvidia-smi's product name ('NVIDIA
    H200') name the same GPU: the model's first word, brand left out, is one of the product's words."""
    m, p = _words(model), _words(product)
    return bool(m) and m[0] in p


def _gpu_address(key: str) -> str | None:
    driver, _, address = key.partition(":")
    return address if driver in NVIDIA_DRIVERS else None


def sysfs_facts(sysfs_root: str | Path, address: str) -> str:
    """What sysfs holds at an address nvidia-smi lists and the report lacks: the clue to the fix."""
    fn = PciFunction(Path(sysfs_root), address)
    if not (fn.path.is_symlink() or fn.path.exists()):
        return f"sysfs has no bus/pci/devices/{address}"
    try:
        return (f"sysfs: vendor {fn.vendor}, device {fn.device_id}, class {fn.class_code}, "
                f"driver {fn.driver or '(none)'}{', a VF' if fn.is_vf else ''}"
                f"{', has mdev_supported_types' if (fn.path / 'mdev_supported_types').is_dir() else ''}")
    except DriverFailure as exc:
        return f"sysfs: {exc}"


def compare(report: HostReport, gpus: list[SmiGpu], sysfs_root: str | Path, *,
            driver_version: str = "") -> dict[str, Any]:
    """The report's NVIDIA GPUs against nvidia-smi's, per address: fields, status and differences."""
    found = {a: dev for dev in report.devices if (a := _gpu_address(dev.key))}
    smi = {g.address: g for g in gpus}
    errors: dict[str, list[str]] = {}
    for e in report.errors:
        errors.setdefault(e.device, []).append(f"{e.driver}: {e.message}{f' ({e.file})' if e.file else ''}")
    entries, differences = [], []
    for address in sorted(found.keys() | smi.keys()):
        dev, gpu = found.get(address), smi.get(address)
        entry: dict[str, Any] = {"address": address, "key": dev.key if dev else None,
                                 "product_name": gpu.product_name if gpu else None, "fields": [],
                                 "notes": list(errors.get(address, []))}
        entries.append(entry)
        if dev is None:
            assert gpu is not None
            entry["status"] = "missing from the report"
            why = f" (report errors: {'; '.join(entry['notes'])})" if entry["notes"] else ""
            differences.append(f"{address}: {gpu.product_name} ({gpu.device_id}) is listed by nvidia-smi but "
                               f"missing from the report{why}")
            entry["notes"] = [*entry["notes"], sysfs_facts(sysfs_root, address)]
            continue
        if gpu is None:
            if (Path(sysfs_root) / "bus" / "pci" / "devices" / address / "physfn").is_symlink():
                entry["status"] = "VF (nvidia-smi lists physical GPUs only)"
            else:
                entry["status"] = "not listed by nvidia-smi"
                differences.append(f"{address}: reported as {dev.key} ({dev.model}) but not listed by nvidia-smi")
            continue
        board = dev.std_board_info
        rows: list[tuple[str, Any, Any, bool | None]] = [
            ("vendor_id", dev.vendor, gpu.vendor_id, dev.vendor == gpu.vendor_id),
            ("device_id", board.get("device_id"), gpu.device_id, board.get("device_id") == gpu.device_id)]
        if gpu.subsystem_vendor and "subsystem_vendor" in board:
            ours, theirs = (f"{board['subsystem_vendor']}:{board.get('subsystem_device')}",
                            f"{gpu.subsystem_vendor}:{gpu.subsystem_device}")
            rows.append(("subsystem", ours, theirs, ours == theirs))
        if gpu.numa_node is not None:
            rows.append(("numa_node", board.get("numa_node"), str(gpu.numa_node),
                         str(board.get("numa_node")) == str(gpu.numa_node)))
        rows.append(("model", dev.model, gpu.product_name, model_fits(dev.model, gpu.product_name)))
        rows += [(name, "", value, None) for name, value in
                 (("mig_mode", gpu.mig_mode), ("virtualization", gpu.virtualization_mode)) if value]
        if dev.model == board.get("device_id"):
            entry["notes"] = [*entry["notes"], f"model is the bare device id: {dev.model} is missing from the "
                                               "driver's MODELS table"]
        entry["fields"] = [{"field": f, "report": r, "nvidia_smi": s, "ok": ok} for f, r, s, ok in rows]
        bad = [f"{f} {r!r} != nvidia-smi {s!r}" for f, r, s, ok in rows if ok is False]
        entry["status"] = "differs" if bad else "match"
        differences += [f"{address}: {b}" for b in bad]
    return {"agree": not differences, "differences": differences, "gpus": entries,
            "nvidia_smi": {"driver_version": driver_version, "gpus": len(gpus)},
            "report": {"drivers": report.drivers, "gpus": len(found), "content_hash": report.content_hash}}


def print_comparison(c: dict[str, Any]) -> None:
    """A plain table (it ends up in logs; no terminal styling), then the verdict and each difference."""
    rows = [("GPU", "field", "rayborg (sysfs)", "nvidia-smi", "result")]
    for g in c["gpus"]:
        if not g["fields"]:
            rows.append((g["address"], "", g["key"] or "-", g["product_name"] or "-", g["status"]))
        for i, f in enumerate(g["fields"]):
            rows.append((g["address"] if i == 0 else "", f["field"], str(f["report"]), str(f["nvidia_smi"]),
                         {True: "ok", False: "DIFFERS", None: "info"}[f["ok"]]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print(f"nvidia-smi {c['nvidia_smi']['driver_version'] or '?'} lists {c['nvidia_smi']['gpus']} GPU(s); "
          f"rayborg discover ({', '.join(c['report']['drivers'])}) reports {c['report']['gpus']}")
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    for g in c["gpus"]:
        for note in g["notes"]:
            print(f"note {g['address']}: {note}")
    for name, ok in c.get("capture", {}).items():
        print(f"capture {name}: {'reproduces the report' if ok else 'DOES NOT reproduce the report'}")
    if c["agree"]:
        print(f"AGREE: {len(c['gpus'])} GPU(s), same addresses, ids and models")
    else:
        print(f"DIFFER: {len(c['differences'])} difference(s)")
        for d in c["differences"]:
            print(f"  {d}")


# ---- capture ---------------------------------------------------------------------------------


def _link(link: Path, target: Path) -> None:
    """A relative symlink, as the kernel makes them (a capture stays valid wherever it is moved)."""
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(os.path.relpath(target, link.parent), link)


class _Capture:
    """Copies PCI functions from one sysfs root to another at their real paths, with what they link to."""

    def __init__(self, src: Path, dest: Path):
        self.src, self.dest = Path(src), Path(dest)
        self.real_src = self.src.resolve()
        self.done: set[str] = set()

    def _rel(self, path: Path) -> Path | None:
        try:
            return path.resolve().relative_to(self.real_src)
        except ValueError:  # points outside the root
            return None

    def function(self, address: str) -> None:
        if address in self.done:
            return
        entry = self.src / "bus" / "pci" / "devices" / address
        if not (entry.is_symlink() or entry.exists()):
            return  # nvidia-smi lists it, sysfs does not: nothing to copy
        self.done.add(address)
        dest_entry = self.dest / "bus" / "pci" / "devices" / address
        rel = self._rel(entry) if entry.is_dir() else None
        if rel is None:  # broken or foreign: keep the link as it is, discovery reports it the same way
            dest_entry.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.readlink(entry), dest_entry)
            return
        d = self.dest / rel
        d.mkdir(parents=True, exist_ok=True)
        _link(dest_entry, d)
        for name in (*CAPTURED_FILES, *sorted(p.name for p in entry.glob("sriov_*"))):
            self._file(entry / name, d / name)
        for name in (*CAPTURED_LINKS, *sorted(p.name for p in entry.glob("virtfn*"))):
            target = self._follow(entry / name, d / name)
            if target is not None and (name == "physfn" or name.startswith("virtfn")):
                self.function(target.name)
        if (entry / "mdev_supported_types").is_dir():
            self._mdev_types(address, entry, d)

    def _file(self, src: Path, dst: Path) -> None:
        if not src.exists():
            return  # absent stays absent (an optional file, or the half-present device discovery reports)
        try:
            dst.write_bytes(src.read_bytes())
        except OSError:  # unreadable there: a directory is unreadable here too
            dst.mkdir(exist_ok=True)

    def _follow(self, link: Path, dst: Path) -> Path | None:
        """Recreate `link` at `dst`; the target (inside the root) when it exists."""
        if not link.is_symlink():
            return None
        rel = self._rel(link)
        if rel is None or not link.exists():
            os.symlink(os.readlink(link), dst)  # broken: stays broken
            return None
        (self.dest / rel).mkdir(parents=True, exist_ok=True)  # a driver, an IOMMU group, a VF's directory
        _link(dst, self.dest / rel)
        return link.resolve()

    def _mdev_types(self, address: str, entry: Path, d: Path) -> None:
        for tdir in sorted(p for p in (entry / "mdev_supported_types").iterdir() if p.is_dir()):
            t = d / "mdev_supported_types" / tdir.name
            (t / "devices").mkdir(parents=True, exist_ok=True)
            for name in MDEV_TYPE_FILES:
                self._file(tdir / name, t / name)
            (t / "create").write_text("")  # write-only in the kernel; an empty file stands in
            for m in sorted((tdir / "devices").iterdir()) if (tdir / "devices").is_dir() else []:
                if (mrel := self._rel(m)) is None or not m.exists():
                    continue
                md = self.dest / mrel
                md.mkdir(parents=True, exist_ok=True)
                (md / "remove").write_text("")
                _link(md / "mdev_type", t)
                _link(t / "devices" / m.name, md)
                _link(self.dest / "bus" / "mdev" / "devices" / m.name, md)
        _link(self.dest / "class" / "mdev_bus" / address, d)


def nvidia_functions(sysfs_root: str | Path) -> set[str]:
    """Addresses of every NVIDIA PCI function (GPUs, their audio functions, NVSwitches, ...)."""
    out = set()
    for fn in list_pci(Path(sysfs_root))[0]:
        try:
            if fn.vendor == NVIDIA_VENDOR:
                out.add(fn.name)
        except DriverFailure:
            pass  # unidentifiable: captured only when nvidia-smi or an error entry names it
    return out


def capture_sysfs(src: str | Path, dest: str | Path, addresses: Iterable[str]) -> list[str]:
    """Copy `addresses` and every NVIDIA function (with their VFs/PFs) from `src` into `dest`; the
    addresses copied. Only what the GPU drivers read is copied: see CAPTURED_FILES/LINKS."""
    cap = _Capture(Path(src), Path(dest))
    Path(dest).mkdir(parents=True, exist_ok=True)
    for address in sorted(set(addresses) | nvidia_functions(src)):
        cap.function(address)
    return sorted(cap.done)


def _vf_mdevs(vf: PciFunction, files: dict[str, str], links: dict[str, str]) -> None:
    """A VF's mdev types (SR-IOV vGPUs, Ampere and later) as top-level files and links of the
    description: its `vfs` entry has no place for them. Paths follow SysfsBuilder's layout."""
    base = f"devices/pci{vf.address.domain}:{vf.address.bus}/{vf.name}"
    types_dir = vf.path / "mdev_supported_types"
    for t in sorted(p for p in types_dir.iterdir() if p.is_dir()):
        tbase = f"{base}/mdev_supported_types/{t.name}"
        files |= {f"{tbase}/{n}": (t / n).read_text().strip() for n in MDEV_TYPE_FILES if (t / n).is_file()}
        files[f"{tbase}/create"] = ""
        for u in sorted(p.name for p in (t / "devices").iterdir()) if (t / "devices").is_dir() else []:
            files[f"{base}/{u}/remove"] = ""
            links |= {f"{tbase}/devices/{u}": f"{base}/{u}", f"{base}/{u}/mdev_type": tbase,
                      f"bus/mdev/devices/{u}": f"{base}/{u}"}
    links[f"class/mdev_bus/{vf.name}"] = base


def _describe(fn: PciFunction, files: dict[str, str], links: dict[str, str]) -> dict[str, Any]:
    d = fn.path
    entry: dict[str, Any] = {"address": fn.name, "vendor": fn.vendor, "device": fn.device_id,
                             "class": fn.class_code,
                             "numa_node": fn.int("numa_node") if (d / "numa_node").exists() else None}
    for key in ("subsystem_vendor", "subsystem_device"):
        if (d / key).exists():
            entry[key] = fn.hex_id(key)
    if driver := fn.driver:
        entry["driver"] = driver
    if (group := fn.iommu_group) is not None:
        entry["iommu_group"] = int(group) if group.isdigit() else group
    sriov = {p.name: p.read_text().strip() for p in sorted(d.glob("sriov_*")) if p.is_file()}
    if "sriov_totalvfs" in sriov:
        entry["total_vfs"] = int(sriov.pop("sriov_totalvfs"))
    sriov.pop("sriov_numvfs", None)  # the builder writes it from the VFs
    if sriov:
        entry["files"] = sriov
    if vfs := fn.virtfns():
        entry["vfs"] = {"addresses": [v.name for v in vfs], "device": vfs[0].device_id}
        if vf_driver := vfs[0].driver:
            entry["vfs"]["driver"] = vf_driver
        for vf in vfs:
            if (vf.path / "mdev_supported_types").is_dir():
                _vf_mdevs(vf, files, links)
    types_dir = d / "mdev_supported_types"
    if types_dir.is_dir():
        entry["mdev_types"], entry["mdevs"] = {}, []
        for t in sorted(p for p in types_dir.iterdir() if p.is_dir()):
            props: dict[str, Any] = {n: (t / n).read_text().strip() for n in MDEV_TYPE_FILES if (t / n).is_file()}
            existing = sorted(p.name for p in (t / "devices").iterdir()) if (t / "devices").is_dir() else []
            if props.get("available_instances", "").isdigit():  # the builder counts existing mdevs off it
                props["available_instances"] = int(props["available_instances"]) + len(existing)
            entry["mdev_types"][t.name] = props
            entry["mdevs"] += [{"type": t.name, "uuid": u} for u in existing]
    return entry


def describe_tree(root: str | Path, addresses: Iterable[str]) -> dict[str, Any]:
    """Captured functions as a tree.json description (drivers/sysfs_tree.py's format); VFs go under their PF.
    A function it cannot describe is left out: the tree.json check then says it does not reproduce."""
    addresses = sorted(addresses)
    pci: list[dict[str, Any]] = []
    files: dict[str, str] = {}
    links: dict[str, str] = {}
    for address in addresses:
        try:
            fn = PciFunction(Path(root), address)
            if not fn.path.is_dir() or (fn.is_vf and fn.physfn in addresses):
                continue
            pci.append(_describe(fn, files, links))
        except (DriverFailure, OSError, ValueError):
            continue
    return {"_comment": "Captured by `rayborg discover --compare-nvidia-smi --out`: the NVIDIA PCI functions "
                        "of a real host, as the GPU drivers read them.", "pci": pci,
            **({"files": files} if files else {}), **({"links": links} if links else {})}


# ---- the whole check -------------------------------------------------------------------------


def _gpu_devices(report: HostReport) -> list[dict[str, Any]]:
    return [d.model_dump(mode="json") for d in report.devices if _gpu_address(d.key)]


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def _capture(report: HostReport, sysfs_root: Path, out: Path, smi_addresses: Iterable[str],
             rediscover: Callable[[Path], HostReport] | None) -> dict[str, bool]:
    """DIR/sysfs and DIR/tree.json, and whether discovery on each gives the report's GPUs again."""
    from rayborg.drivers.sysfs_tree import build_tree

    wanted = {a for d in report.devices if (a := _gpu_address(d.key))} | set(smi_addresses)
    wanted |= {e.device for e in report.errors if e.driver in NVIDIA_DRIVERS and e.device}
    captured = capture_sysfs(sysfs_root, out / "sysfs", wanted)
    tree = describe_tree(out / "sysfs", captured)
    _write_json(out / "tree.json", tree)
    if rediscover is None:
        return {}
    expected = _gpu_devices(report)  # devices only: error entries name files under the root they came from
    with tempfile.TemporaryDirectory(prefix="rayborg-tree-") as tmp:
        from_tree = _gpu_devices(rediscover(build_tree(tmp, tree)))
    return {"sysfs": _gpu_devices(rediscover(out / "sysfs")) == expected, "tree.json": from_tree == expected}


def _try_capture(report: HostReport, sysfs_root: Path, out: Path, smi_addresses: Iterable[str],
                 rediscover: Callable[[Path], HostReport] | None) -> tuple[dict[str, bool], str]:
    """_capture, whose failure (an odd sysfs) is one more difference, never the loss of the comparison."""
    try:
        return _capture(report, sysfs_root, out, smi_addresses, rediscover), ""
    except Exception as exc:  # noqa: BLE001 - the capture is secondary to the comparison
        return {}, f"capture into {out} failed: {type(exc).__name__}: {exc}"


def _prepare_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise CheckError(f"--out {out} is not a directory")
    if (out / "sysfs").exists() and any((out / "sysfs").iterdir()):
        raise CheckError(f"--out {out} already holds a sysfs/ capture; choose an empty directory")
    out.mkdir(parents=True, exist_ok=True)


def check(report: HostReport, sysfs_root: str | Path, *, tool: str = "nvidia-smi", out: str | Path | None = None,
          as_json: bool = False, rediscover: Callable[[Path], HostReport] | None = None,
          timeout: float = SMI_TIMEOUT) -> int:
    """Compare, print, write DIR's files; 0 agree, 1 differ. CheckError when it cannot run (after writing
    what it could: the report and the capture are worth keeping when nvidia-smi fails)."""
    sysfs_root = Path(sysfs_root)
    out = Path(out) if out is not None else None
    if out is not None:
        _prepare_out(out)
        _write_json(out / "report.json", report.model_dump(mode="json"))
    try:
        log = anonymise_xml(run_nvidia_smi(tool, timeout))
    except CheckError:
        if out is not None:  # still capture: the sysfs side is what a fixture needs most
            _try_capture(report, sysfs_root, out, [], rediscover)
        raise
    if out is not None:
        (out / "nvidia-smi.xml").write_text(log)  # before parsing: an odd log is kept for a look
    driver_version, gpus = parse_nvidia_smi(log)
    comparison = compare(report, gpus, sysfs_root, driver_version=driver_version)
    if out is not None:
        comparison["capture"], failure = _try_capture(report, sysfs_root, out, [g.address for g in gpus], rediscover)
        bad = [name for name, ok in comparison["capture"].items() if not ok]
        comparison["differences"] += [f"discovery on {out / name} does not give the report's GPUs" for name in bad]
        comparison["differences"] += [failure] if failure else []
        comparison["agree"] = not comparison["differences"]
        _write_json(out / "comparison.json", comparison)
    if as_json:
        print(json.dumps(comparison, indent=2))
    else:
        print_comparison(comparison)
    return 0 if comparison["agree"] else 1


__all__ = ["CheckError", "SmiGpu", "anonymise_xml", "bus_id", "capture_sysfs", "check", "compare", "describe_tree",
           "model_fits", "parse_nvidia_smi", "pci_ids", "run_nvidia_smi", "sysfs_facts"]

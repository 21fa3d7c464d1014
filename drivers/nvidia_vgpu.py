"""NVIDIA vGPU driver: mdev types, available instances, and creating/removing mdevs.

Spec: 2023.1 vgpu-driver-proposal (latest implemented). Options mirror its config:
    enabled_vgpu_types: ["nvidia-223", ...] (list or comma string)   ~ [gpu_devices]/enabled_vgpu_types
    device_addresses: {"nvidia-223": ["0000:af:00.0", ...]}          ~ [vgpu_<type>]/device_addresses
    filter_sriov_vfs: bool                                            ~ [gpu_devices]/filter_sriov_vfs
With `device_addresses` set, exactly the listed GPUs are vGPUs (the others are `nvidia_gpu`'s pGPUs)
and a listed address that is no virtualized NVIDIA GPU is an error entry. Without any configuration
(demos, fixture trees) every virtualized GPU is a vGPU, of the type that already has mdevs, else the
first type by name: a rayborg convenience, upstream requires the config.

One device and one deployable per GPU: RC VGPU, traits OWNER_CYBORG + CUSTOM_NVIDIA_<PID>_<TYPE>
(type from `<type>/name`: "GRID T4-2B" -> T4_2B), num_accelerators = available_instances + existing
mdevs, one MDEV handle each with asked_type and vgpu_mark `<type>_<n>`.

Bind/unbind write the attach handle's uuid into `class/mdev_bus/<pci>/mdev_supported_types/<type>/create`
and `1` into `bus/mdev/devices/<uuid>/remove` (upstream's path; the spec's `<type>/UUID/remove` is not
where the kernel puts it).
"""

from __future__ import annotations

import uuid as uuidlib
from pathlib import Path

from rayborg.drivers.base import BoundHandle, DriverAttachHandle, DriverDevice, DriverFailure, custom_name
from rayborg.drivers.nvidia_gpu import NvidiaGpuBase, vgpu_config
from rayborg.drivers.sysfs import PciAddress, PciFunction, read_int, read_text


class MdevError(DriverFailure):
    """An mdev could not be created or removed; names the device and the file."""


class NvidiaVgpuDriver(NvidiaGpuBase):
    NAME = "nvidia_vgpu"
    PREPARES = True  # a bound handle is an mdev to create, and to remove on release

    def __init__(self, ctx=None):
        super().__init__(ctx)
        self.type_by_address = vgpu_config(self.options)

    def matches(self, fn: PciFunction) -> bool:
        if not self.is_gpu(fn):
            return False
        if self.type_by_address:  # a configured host: only the listed GPUs are vGPUs (nvidia_gpu takes the rest)
            return fn.name in self.type_by_address
        return self.virtualized(fn)

    def select(self, funcs: list[PciFunction]) -> list[PciFunction]:
        chosen = super().select(funcs)
        found = {fn.name for fn in chosen}
        for address, type_id in sorted(self.type_by_address.items()):
            if address not in found:  # a typo in the config must not pass for a GPU-less host
                where = self.types_dir(address).parent
                what = "is not an NVIDIA GPU" if where.exists() else "does not exist on this host"
                self.warnings.append(DriverFailure(f"PCI address configured for vGPU type {type_id!r} {what}",
                                                   device=address, file=where))
        return chosen

    def types_dir(self, address: str) -> Path:
        return self.ctx.sysfs_root / "bus" / "pci" / "devices" / address / "mdev_supported_types"

    def choose_type(self, fn: PciFunction) -> str:
        configured = self.type_by_address.get(fn.name)
        if configured and not self.virtualized(fn):
            raise DriverFailure(f"configured for vGPU type {configured!r} but not virtualized (no "
                                "mdev_supported_types: is the NVIDIA vGPU manager installed?)", device=fn.name,
                                file=fn.path / "mdev_supported_types")
        types = sorted(p.name for p in (fn.path / "mdev_supported_types").iterdir() if p.is_dir())
        if configured:
            if configured not in types:
                raise DriverFailure(f"vGPU type {configured!r} is not supported by this GPU "
                                    f"(supported: {', '.join(types) or 'none'})", device=fn.name,
                                    file=fn.path / "mdev_supported_types" / configured)
            return configured
        if not types:
            raise DriverFailure("no mdev types", device=fn.name, file=fn.path / "mdev_supported_types")
        used = [t for t in types if self._existing(fn.path / "mdev_supported_types" / t)]
        return used[0] if used else types[0]

    @staticmethod
    def _existing(tdir: Path) -> list[str]:
        """The type's mdevs: no `devices` dir means none, for choosing the type as for counting."""
        devices = tdir / "devices"
        return sorted(p.name for p in devices.iterdir()) if devices.is_dir() else []

    def build(self, fn: PciFunction) -> DriverDevice | None:
        type_id = self.choose_type(fn)
        tdir = fn.path / "mdev_supported_types" / type_id
        available = read_int(tdir / "available_instances", device=fn.name)
        existing = self._existing(tdir)
        name = read_text(tdir / "name", device=fn.name)
        words = name.split()
        short = words[1] if len(words) > 1 else name  # "GRID T4-2B" -> "T4-2B"
        total = available + len(existing)
        handles = [self.handle(fn, "MDEV", asked_type=type_id, vgpu_mark=f"{type_id}_{i}") for i in range(total)]
        dep = self.deployable(fn, handles, resource_class="VGPU",
                              traits=["OWNER_CYBORG", custom_name(self.VENDOR_NAME, self.product(fn), short)],
                              attributes={"vgpu_type": type_id, "vgpu_name": name})
        return self.device(fn, [dep], vendor_board_info=f"{type_id} ({name}): {available} available, "
                                                        f"{len(existing)} in use")

    # ---- mdev lifecycle -------------------------------------------------------------------

    def prepare(self, handle: BoundHandle) -> None:
        """The mdev of a handle claimed for an ARQ (its uuid is the handle's)."""
        self.create_mdev(handle.attach_info, handle.uuid)

    def unprepare(self, handle: BoundHandle) -> None:
        self.remove_mdev(handle.attach_info, handle.uuid)

    @staticmethod
    def _target(attach_info: dict[str, str] | DriverAttachHandle) -> tuple[str, str]:
        info = attach_info.attach_info if isinstance(attach_info, DriverAttachHandle) else attach_info
        address = str(PciAddress(info["domain"], info["bus"], info["device"], info["function"]))
        return address, info["asked_type"]

    @staticmethod
    def _uuid(mdev_uuid: str, device: str) -> str:
        try:
            return str(uuidlib.UUID(str(mdev_uuid)))
        except ValueError:
            raise MdevError(f"invalid mdev uuid {mdev_uuid!r}", device=device) from None

    def create_mdev(self, attach_info: dict[str, str] | DriverAttachHandle, mdev_uuid: str) -> str:
        """Create the mdev for an MDEV attach handle (uuid = the handle's uuid); returns the uuid."""
        address, type_id = self._target(attach_info)
        mdev_uuid = self._uuid(mdev_uuid, address)
        tdir = self.ctx.sysfs_root / "class" / "mdev_bus" / address / "mdev_supported_types" / type_id
        if not tdir.is_dir():
            raise MdevError(f"no mdev type {type_id}", device=address, file=tdir)
        if (self.ctx.sysfs_root / "bus" / "mdev" / "devices" / mdev_uuid).exists():
            return mdev_uuid  # already there: binding is retried after restarts, stay idempotent
        if read_int(tdir / "available_instances", device=address) <= 0:
            raise MdevError(f"no available {type_id} instances", device=address, file=tdir / "available_instances")
        self._write(tdir / "create", mdev_uuid, address)
        return mdev_uuid

    def remove_mdev(self, attach_info: dict[str, str] | DriverAttachHandle | None, mdev_uuid: str) -> bool:
        """Remove an mdev; False when it was already gone (unbind is idempotent)."""
        device = self._target(attach_info)[0] if attach_info else str(mdev_uuid)
        mdev_uuid = self._uuid(mdev_uuid, device)
        mdir = self.ctx.sysfs_root / "bus" / "mdev" / "devices" / mdev_uuid
        if not mdir.exists():
            return False
        self._write(mdir / "remove", "1", device)
        return True

    @staticmethod
    def _write(path: Path, text: str, device: str) -> None:
        try:
            with path.open("w") as fh:  # one write(2), as `echo > file` does
                fh.write(text)
        except OSError as exc:
            raise MdevError(f"write failed: {exc.strerror or exc}", device=device, file=path) from None

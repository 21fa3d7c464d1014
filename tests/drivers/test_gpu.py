"""NVIDIA pGPU and vGPU drivers: reports, config validation, mdev create/remove."""

from __future__ import annotations

import pytest

from rayborg.drivers import discover_host
from rayborg.drivers.base import DriverContext
from rayborg.drivers.nvidia_vgpu import MdevError, NvidiaVgpuDriver
from rayborg.drivers.testing import FakeKernel

EXISTING = "6a1b1c8e-7d0a-4c3e-9f1e-0d2b3c4d5e6f"
NEW = "1c6d51d2-5a9b-4a6e-8f44-9a0b6a2c4e11"


def test_pgpu_report(family_tree):
    r = discover_host("n1", family_tree("nvidia_gpu"), drivers=["nvidia_gpu", "nvidia_vgpu"])
    assert r.errors == []
    assert [d.key for d in r.devices] == ["nvidia_gpu:0000:3b:00.0", "nvidia_gpu:0000:af:00.0"]
    t4 = r.devices[1]
    assert (t4.type, t4.vendor, t4.model) == ("GPU", "0x10de", "Tesla T4")
    assert t4.std_board_info["subsystem_device"] == "0x12a2" and t4.std_board_info["driver"] == "vfio-pci"
    (dep,) = t4.deployables
    assert (dep.name, dep.num_accelerators, dep.resource_class) == ("n1_0000_af_00_0", 1, "PGPU")
    assert dep.attributes == {"rc": "PGPU", "trait0": "OWNER_CYBORG", "trait1": "CUSTOM_NVIDIA_1EB8"}
    assert [h.model_dump() for h in dep.attach_handles] == [{"attach_type": "PCI", "in_use": False, "attach_info": {
        "bus": "af", "device": "00", "domain": "0000", "function": "0"}}]
    assert r.devices[0].std_board_info["driver"] == ""  # unbound GPU is still a passthrough candidate


def test_vgpu_report_auto_type(family_tree):
    r = discover_host("n1", family_tree("nvidia_vgpu"), drivers=["nvidia_gpu", "nvidia_vgpu"])
    assert r.errors == [] and [d.key for d in r.devices] == ["nvidia_vgpu:0000:86:00.0", "nvidia_vgpu:0000:af:00.0"]
    dep = r.devices[1].deployables[0]
    # the type with an existing mdev wins; 7 still available + 1 existing
    assert (dep.resource_class, dep.num_accelerators) == ("VGPU", 8)
    assert dep.traits == ["OWNER_CYBORG", "CUSTOM_NVIDIA_1EB8_T4_2B"]
    assert dep.attributes["vgpu_type"] == "nvidia-223"
    h0 = dep.attach_handles[0]
    assert h0.attach_type == "MDEV" and h0.attach_info == {
        "asked_type": "nvidia-223", "bus": "af", "device": "00", "domain": "0000", "function": "0",
        "vgpu_mark": "nvidia-223_0"}
    assert sorted(h.attach_info["vgpu_mark"] for h in dep.attach_handles) == [f"nvidia-223_{i}" for i in range(8)]


def test_vgpu_configured_types(family_tree):
    opts = {"enabled_vgpu_types": "nvidia-222", "device_addresses": {"nvidia-222": ["0000:af:00.0"]}}
    r = discover_host("n1", family_tree("nvidia_vgpu"), drivers=["nvidia_vgpu"], options={"nvidia_vgpu": opts})
    (dev,) = r.devices  # 86:00.0 is not listed: not a vGPU on a configured host
    dep = dev.deployables[0]
    assert dep.num_accelerators == 16 and dep.traits[1] == "CUSTOM_NVIDIA_1EB8_T4_1B"


@pytest.mark.parametrize("opts, message", [
    ({"enabled_vgpu_types": ["nvidia-223"]}, "has no device_addresses"),
    ({"enabled_vgpu_types": ["nvidia-223"], "device_addresses": {"nvidia-223": "0000:af:00"}}, "malformed PCI address"),
    ({"enabled_vgpu_types": "nvidia-222,nvidia-223",
      "device_addresses": {"nvidia-222": "0000:af:00.0", "nvidia-223": "0000:af:00.0"}}, "is given for vGPU types"),
    ({"device_addresses": {"nvidia-223": "0000:af:00.0"}}, "not in enabled_vgpu_types"),
])
def test_vgpu_bad_config_is_an_error_entry(family_tree, opts, message):
    r = discover_host("n1", family_tree("nvidia_vgpu"), drivers=["nvidia_vgpu", "nvidia_gpu"],
                      options={"nvidia_vgpu": opts})
    assert r.devices == [] and r.drivers == ["nvidia_gpu"]
    (err,) = r.errors
    assert err.driver == "nvidia_vgpu" and message in err.message


def test_vgpu_unsupported_type_skips_that_gpu(family_tree):
    opts = {"enabled_vgpu_types": ["nvidia-222", "nvidia-223"],
            "device_addresses": {"nvidia-222": ["0000:86:00.0"], "nvidia-223": ["0000:af:00.0"]}}
    r = discover_host("n1", family_tree("nvidia_vgpu"), drivers=["nvidia_vgpu"], options={"nvidia_vgpu": opts})
    assert [d.key for d in r.devices] == ["nvidia_vgpu:0000:af:00.0"]
    (err,) = r.errors
    assert err.device == "0000:86:00.0" and "'nvidia-222' is not supported" in err.message
    assert err.file.endswith("mdev_supported_types/nvidia-222")


def test_vgpu_non_numeric_available_instances(family_tree, builder):
    root = family_tree("nvidia_vgpu")
    builder.write("devices/pci0000:86/0000:86:00.0/mdev_supported_types/nvidia-223/available_instances", "many")
    r = discover_host("n1", root, drivers=["nvidia_vgpu"])
    assert [d.key for d in r.devices] == ["nvidia_vgpu:0000:af:00.0"]
    assert r.errors[0].file.endswith("nvidia-223/available_instances") and "non-numeric" in r.errors[0].message


def vgpu(root) -> NvidiaVgpuDriver:
    return NvidiaVgpuDriver(DriverContext(hostname="n1", sysfs_root=root))


def test_mdev_create_and_remove_flow(family_tree):
    root = family_tree("nvidia_vgpu")
    drv, kernel = vgpu(root), FakeKernel(root)
    handle = drv.discover().devices[1].deployables[0].attach_handles[3]
    assert drv.create_mdev(handle, NEW) == NEW
    create = root / "class/mdev_bus/0000:af:00.0/mdev_supported_types/nvidia-223/create"
    assert create.read_text() == NEW  # what `echo <uuid> > .../create` writes
    assert kernel.settle() == [f"create {NEW}"]
    assert (root / "bus/mdev/devices" / NEW).is_dir()
    dep = drv.discover().devices[1].deployables[0]
    assert dep.num_accelerators == 8  # available - 1 + existing + 1: the inventory is stable
    assert drv.create_mdev(handle.attach_info, NEW) == NEW and create.read_text() == ""  # idempotent
    assert drv.remove_mdev(handle.attach_info, NEW) is True
    assert (root / "bus/mdev/devices" / NEW / "remove").read_text() == "1"
    assert kernel.settle() == [f"remove {NEW}"]
    assert drv.remove_mdev(handle.attach_info, NEW) is False  # already gone


def test_mdev_errors(family_tree, builder):
    root = family_tree("nvidia_vgpu")
    drv = vgpu(root)
    info = {"asked_type": "nvidia-999", "bus": "af", "device": "00", "domain": "0000", "function": "0"}
    with pytest.raises(MdevError, match="no mdev type nvidia-999.*device 0000:af:00.0"):
        drv.create_mdev(info, NEW)
    with pytest.raises(MdevError, match="invalid mdev uuid"):
        drv.create_mdev(info | {"asked_type": "nvidia-223"}, "not-a-uuid")
    builder.write("devices/pci0000:86/0000:86:00.0/mdev_supported_types/nvidia-223/available_instances", "0")
    full = info | {"bus": "86", "asked_type": "nvidia-223"}
    with pytest.raises(MdevError, match="no available nvidia-223 instances"):
        drv.create_mdev(full, NEW)
    # the kernel refuses the write (e.g. EBUSY): the error names the file
    builder.write("devices/pci0000:86/0000:86:00.0/mdev_supported_types/nvidia-223/available_instances", "1")
    create = root / "devices/pci0000:86/0000:86:00.0/mdev_supported_types/nvidia-223/create"
    create.unlink()
    create.mkdir()
    with pytest.raises(MdevError, match=r"write failed.*file .*nvidia-223/create"):
        drv.create_mdev(full, NEW)

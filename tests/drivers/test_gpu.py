"""NVIDIA pGPU and vGPU drivers: reports, config validation, mdev create/remove."""

from __future__ import annotations

import shutil

import pytest

from rayborg.drivers import discover_host
from rayborg.drivers.base import DriverContext
from rayborg.drivers.nvidia_vgpu import MdevError, NvidiaVgpuDriver
from sysfs_helpers import FakeKernel, expected_pci_device, pci_handle

EXISTING = "6a1b1c8e-7d0a-4c3e-9f1e-0d2b3c4d5e6f"
NEW = "1c6d51d2-5a9b-4a6e-8f44-9a0b6a2c4e11"


def pgpu(bus: str, model: str, board: dict[str, str], trait: str) -> dict:
    """The whole expected device, spelled out: one deployable, one accelerator, one PCI handle."""
    return expected_pci_device("nvidia_gpu", f"0000:{bus}:00.0", type="GPU", vendor="0x10de", model=model,
                               board=board, rc="PGPU", traits=["OWNER_CYBORG", trait], num=1)


def test_pgpu_report(family_tree):
    r = discover_host("n1", family_tree("nvidia_gpu"), drivers=["nvidia_gpu", "nvidia_vgpu"])
    assert r.errors == [] and r.drivers == ["nvidia_gpu", "nvidia_vgpu"]
    # the ASPEED VGA (not NVIDIA) and the V100's audio function (not a GPU class) are nobody's
    v100, t4 = (d.model_dump() for d in r.devices)
    # unbound, no IOMMU group, no subsystem ids: still a passthrough candidate (libvirt binds vfio-pci)
    assert v100 == pgpu("3b", "Tesla V100-PCIE-32GB", {
        "device_id": "0x1db6", "class": "0x030000", "vendor_id": "0x10de", "numa_node": "0", "driver": ""},
        "CUSTOM_NVIDIA_1DB6")
    assert t4 == pgpu("af", "Tesla T4", {
        "device_id": "0x1eb8", "class": "0x030200", "vendor_id": "0x10de", "subsystem_vendor": "0x10de",
        "subsystem_device": "0x12a2", "numa_node": "1", "iommu_group": "90", "driver": "vfio-pci"},
        "CUSTOM_NVIDIA_1EB8")
    assert sum(dep.num_accelerators for dep in r.deployables()) == 2
    assert len({h.info_json() for dep in r.deployables() for h in dep.attach_handles}) == 2


@pytest.mark.parametrize("device_id, model", [("0x2335", "H200-SXM-141GB"), ("0x2331", "H100-PCIE"),
                                               ("0x2324", "H800"), ("0x2b85", "0x2b85")])
def test_hopper_models_and_unknown_ids(builder, device_id, model):
    builder.pci("0000:19:00.0", vendor="0x10de", device=device_id, cls="0x030200", driver="nvidia")
    (dev,) = discover_host("n1", builder.root, drivers=["nvidia_gpu"]).devices
    assert dev.model == model and dev.deployables[0].traits[1] == f"CUSTOM_NVIDIA_{device_id[2:].upper()}"


def test_vgpu_report_auto_type(family_tree):
    r = discover_host("n1", family_tree("nvidia_vgpu"), drivers=["nvidia_gpu", "nvidia_vgpu"])
    assert r.errors == [] and [d.key for d in r.devices] == ["nvidia_vgpu:0000:86:00.0", "nvidia_vgpu:0000:af:00.0"]
    # af:00.0: the type with an existing mdev wins; 7 still available + 1 existing
    assert r.devices[1].model_dump() == expected_pci_device(
        "nvidia_vgpu", "0000:af:00.0", type="GPU", vendor="0x10de", model="Tesla T4",
        board={"device_id": "0x1eb8", "class": "0x030200", "vendor_id": "0x10de", "numa_node": "1",
               "iommu_group": "90", "driver": "nvidia"},
        rc="VGPU", traits=["OWNER_CYBORG", "CUSTOM_NVIDIA_1EB8_T4_2B"], num=8,
        attributes={"vgpu_name": "GRID T4-2B", "vgpu_type": "nvidia-223"},
        vendor_board_info="nvidia-223 (GRID T4-2B): 7 available, 1 in use",
        handles=[pci_handle("0000:af:00.0", "MDEV", asked_type="nvidia-223", vgpu_mark=f"nvidia-223_{i}")
                 for i in range(8)])


def test_vgpu_configured_types(family_tree):
    opts = {"enabled_vgpu_types": "nvidia-222", "device_addresses": {"nvidia-222": ["0000:af:00.0"]}}
    r = discover_host("n1", family_tree("nvidia_vgpu"), drivers=["nvidia_vgpu"], options={"nvidia_vgpu": opts})
    (dev,) = r.devices  # 86:00.0 is not listed: not a vGPU on a configured host
    dep = dev.deployables[0]
    assert dep.num_accelerators == 16 and dep.traits[1] == "CUSTOM_NVIDIA_1EB8_T4_1B"


def test_vgpu_configured_host_reports_unlisted_gpus_as_pgpus(family_tree):
    # the JSON text of a RAYBORG_DRIVER_OPTIONS__NVIDIA_VGPU__DEVICE_ADDRESSES variable is a table too
    opts = {"enabled_vgpu_types": "nvidia-222", "device_addresses": '{"nvidia-222": "0000:af:00.0"}'}
    r = discover_host("n1", family_tree("nvidia_vgpu"), drivers=["nvidia_gpu", "nvidia_vgpu"],
                      options={"nvidia_vgpu": opts})
    assert r.errors == []
    pgpu86, vgpu_af = (d.model_dump() for d in r.devices)
    # virtualizable, but the operator made only af:00.0 a vGPU: 86:00.0 is for passthrough
    assert pgpu86 == pgpu("86", "Tesla T4", {"device_id": "0x1eb8", "class": "0x030200", "vendor_id": "0x10de",
                                              "numa_node": "0", "driver": "nvidia"}, "CUSTOM_NVIDIA_1EB8")
    assert (vgpu_af["key"], vgpu_af["deployables"][0]["num_accelerators"]) == ("nvidia_vgpu:0000:af:00.0", 16)


def test_vgpu_configured_addresses_that_are_no_vgpu_are_error_entries(family_tree, builder):
    root = family_tree("nvidia_gpu")  # af:00.0 and 3b:00.0 are not virtualized, 03:00.0 is an ASPEED VGA
    opts = {"enabled_vgpu_types": "nvidia-223",
            "device_addresses": {"nvidia-223": ["0000:3b:00.0", "0000:d8:00.0", "0000:03:00.0"]}}
    r = discover_host("n1", root, drivers=["nvidia_gpu", "nvidia_vgpu"], options={"nvidia_vgpu": opts})
    assert [d.key for d in r.devices] == ["nvidia_gpu:0000:af:00.0"]  # 3b:00.0 is the operator's vGPU
    assert [(e.driver, e.device, e.file.removeprefix(str(root)), e.message) for e in r.errors] == [
        ("nvidia_vgpu", "0000:03:00.0", "/bus/pci/devices/0000:03:00.0",
         "PCI address configured for vGPU type 'nvidia-223' is not an NVIDIA GPU"),
        ("nvidia_vgpu", "0000:3b:00.0", "/bus/pci/devices/0000:3b:00.0/mdev_supported_types",
         "configured for vGPU type 'nvidia-223' but not virtualized (no mdev_supported_types: "
         "is the NVIDIA vGPU manager installed?)"),
        ("nvidia_vgpu", "0000:d8:00.0", "/bus/pci/devices/0000:d8:00.0",
         "PCI address configured for vGPU type 'nvidia-223' does not exist on this host")]


@pytest.mark.parametrize("value, keys", [
    ("false", ["nvidia_vgpu:0000:86:00.0", "nvidia_vgpu:0000:86:00.4", "nvidia_vgpu:0000:af:00.0"]),
    ("true", ["nvidia_vgpu:0000:86:00.0", "nvidia_vgpu:0000:af:00.0"]),
    (True, ["nvidia_vgpu:0000:86:00.0", "nvidia_vgpu:0000:af:00.0"]),
    ("maybe", None),
])
def test_filter_sriov_vfs_from_a_string(family_tree, builder, value, keys):
    root = family_tree("nvidia_vgpu")
    builder.vfs("0000:86:00.0", ["0000:86:00.4"], device="0x1eb8", driver="nvidia")
    builder.write("devices/pci0000:86/0000:86:00.4/class", "0x030200")
    builder.mdev_types("0000:86:00.4", {"nvidia-223": {"name": "GRID T4-2B", "available_instances": 1}})
    r = discover_host("n1", root, drivers=["nvidia_vgpu"], options={"nvidia_vgpu": {"filter_sriov_vfs": value}})
    if keys is None:
        assert r.devices == [] and [e.message for e in r.errors] == [
            "driver did not start: option filter_sriov_vfs must be true or false, got 'maybe'"]
    else:
        assert r.errors == [] and [d.key for d in r.devices] == keys


@pytest.mark.parametrize("opts, message", [
    ({"enabled_vgpu_types": ["nvidia-223"], "device_addresses": "0000:af:00.0"},
     "device_addresses must be a table of vGPU type -> PCI addresses"),
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


T86 = "devices/pci0000:86/0000:86:00.0/mdev_supported_types"


@pytest.mark.parametrize("break_it, file, message", [
    (lambda b: (b.root / T86 / "nvidia-223/name").unlink(), "nvidia-223/name", "missing sysfs file"),
    (lambda b: b.unreadable(f"{T86}/nvidia-223/available_instances"), "nvidia-223/available_instances",
     "unreadable sysfs file"),
    (lambda b: shutil.rmtree(b.root / T86 / "nvidia-223"), "0000:86:00.0/mdev_supported_types", "no mdev types"),
], ids=["no type name", "unreadable available_instances", "no mdev types"])
def test_vgpu_bad_type_dir_skips_that_gpu(family_tree, builder, break_it, file, message):
    root = family_tree("nvidia_vgpu")
    break_it(builder)
    r = discover_host("n1", root, drivers=["nvidia_gpu", "nvidia_vgpu"])
    # a virtualized GPU never falls back to passthrough: nvidia_gpu must not pick it up either
    assert [d.key for d in r.devices] == ["nvidia_vgpu:0000:af:00.0"]
    (err,) = r.errors
    assert (err.driver, err.device) == ("nvidia_vgpu", "0000:86:00.0")
    assert err.file.endswith(file) and message in err.message


def test_vgpu_type_without_devices_dir_has_no_mdevs(family_tree):
    root = family_tree("nvidia_vgpu")
    (root / T86 / "nvidia-223/devices").rmdir()
    r = discover_host("n1", root, drivers=["nvidia_vgpu"])
    assert r.errors == []
    dep = r.devices[0].deployables[0]
    assert (dep.name, dep.num_accelerators, dep.attributes["vgpu_type"]) == ("n1_0000_86_00_0", 8, "nvidia-223")


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


def test_a_bound_vgpu_handle_is_prepared_as_its_mdev(family_tree):
    """Driver.prepare/unprepare (what the binder calls on bind and release): the vGPU driver creates
    and removes the mdev of the handle; other drivers prepare nothing."""
    from rayborg.actors.device_prep import prepares
    from rayborg.drivers.base import BoundHandle

    root = family_tree("nvidia_vgpu")
    drv, kernel = vgpu(root), FakeKernel(root)
    info = drv.discover().devices[1].deployables[0].attach_handles[3].attach_info
    drv.prepare(BoundHandle(NEW, "MDEV", info))
    drv.prepare(BoundHandle(NEW, "MDEV", info))  # a resumed bind prepares again: idempotent
    assert kernel.settle() == [f"create {NEW}"] and (root / "bus/mdev/devices" / NEW).is_dir()
    drv.unprepare(BoundHandle(NEW, "MDEV", info))
    drv.unprepare(BoundHandle(NEW, "MDEV", info))
    assert kernel.settle() == [f"remove {NEW}"]
    assert [name for name in ("nvidia_vgpu", "nvidia_gpu", "intel_fpga", "fake", None, "nope") if prepares(name)] == [
        "nvidia_vgpu"]


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

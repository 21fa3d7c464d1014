"""QAT, X710 NIC and Inspur NVMe: full reports on their fixture trees and their bad inputs."""

from __future__ import annotations

import pytest

from rayborg.drivers import discover_host
from sysfs_helpers import expected_pci_device

PCI = ("bus", "device", "domain", "function")


def one(root, name, **options):
    return discover_host("n1", root, drivers=[name], options={name: options})


def test_qat_pf_with_vfs_and_pf_without(family_tree):
    r = one(family_tree("intel_qat"), "intel_qat")
    assert r.errors == [] and [d.key for d in r.devices] == ["intel_qat:0000:3d:00.0", "intel_qat:0000:3f:00.0"]
    with_vfs, bare = r.devices
    assert (with_vfs.type, with_vfs.model, with_vfs.std_board_info["total_vfs"]) == ("QAT", "C62x", "16")
    assert [d.name for d in with_vfs.deployables] == ["n1_0000_3d_01_0", "n1_0000_3d_01_1"]
    for dep in with_vfs.deployables + bare.deployables:
        assert dep.num_accelerators == 1 and dep.resource_class == "CUSTOM_QAT" and len(dep.attach_handles) == 1
        assert dep.attributes == {"rc": "CUSTOM_QAT", "trait0": "CUSTOM_QAT_INTEL",
                                  "trait1": "CUSTOM_QAT_PRODUCT_ID_37C8"}
    assert with_vfs.deployables[1].attach_handles[0].attach_info == {
        "bus": "3d", "device": "01", "domain": "0000", "function": "1"}
    assert with_vfs.controlpath_id.cpid_info["device"] == "00"
    assert bare.deployables[0].attach_handles[0].attach_info["bus"] == "3f"


def test_qat_non_numeric_sriov(family_tree, builder):
    root = family_tree("intel_qat")
    builder.write("devices/pci0000:3f/0000:3f:00.0/sriov_numvfs", "sixteen")
    r = one(root, "intel_qat")
    assert [d.key for d in r.devices] == ["intel_qat:0000:3d:00.0"]
    assert r.errors[0].file.endswith("0000:3f:00.0/sriov_numvfs") and r.errors[0].device == "0000:3f:00.0"


def test_x710_without_mappings(family_tree):
    r = one(family_tree("intel_x710"), "intel_x710")
    assert r.errors == []
    pf0, pf1 = r.devices
    assert (pf0.type, pf0.model, pf0.vendor_board_info) == ("NIC", "X710", "eth2")
    assert [d.name for d in pf0.deployables] == ["n1_0000_3b_02_0", "n1_0000_3b_02_1"]
    assert pf0.deployables[0].traits == ["CUSTOM_VF"] and pf0.deployables[0].resource_class == "CUSTOM_NIC"
    assert pf1.deployables[0].traits == ["CUSTOM_PF"]
    assert list(pf0.deployables[0].attach_handles[0].attach_info) == list(PCI)


def test_x710_physnet_and_function(family_tree):
    r = one(family_tree("intel_x710"), "intel_x710", physical_device_mappings="physnet1:eth2|eth3",
            function_device_mappings="GTPv1:eth3|eth2")
    assert r.errors == []

    def nic(address: str, ifname: str, vfs: list[str]) -> dict:
        # each VF is a deployable (a PF without VFs is its own), its handle carries the physnet
        return expected_pci_device(
            "intel_x710", address, type="NIC", vendor="0x8086", model="X710", vendor_board_info=ifname,
            board={"device_id": "0x1572", "class": "0x020000", "vendor_id": "0x8086", "numa_node": "0",
                   "driver": "i40e", "ifname": ifname, "vf_count": str(len(vfs))},
            rc="CUSTOM_NIC", traits=["CUSTOM_VF" if vfs else "CUSTOM_PF", "CUSTOM_PHYSNET1", "CUSTOM_GTPV1"], num=1,
            attributes={"function": "GTPv1", "physical_network": "physnet1"},
            deployables_at=vfs or [address], handle_info={"physical_network": "physnet1"})

    # (the interface counters are test_driver_stats.py's)
    assert [d.model_dump(exclude={"stats"}) for d in r.devices] == [nic("0000:3b:00.0", "eth2", ["0000:3b:02.0", "0000:3b:02.1"]),
                                                   nic("0000:3b:00.1", "eth3", [])]


@pytest.mark.parametrize("mapping, message", [
    ("physnet1:eth2,physnet1:eth3", "duplicate names"),
    ("physnet1", "bad entry 'physnet1'"),
    ("a:eth2,b:eth2", "interface eth2 is mapped to 'a' and 'b'"),
])
def test_x710_bad_mappings(family_tree, mapping, message):
    r = one(family_tree("intel_x710"), "intel_x710", physical_device_mappings=mapping)
    assert r.devices == [] and message in r.errors[0].message and r.errors[0].driver == "intel_x710"


def test_x710_vf_half_present(family_tree):
    root = family_tree("intel_x710")
    (root / "devices/pci0000:3b/0000:3b:02.1/vendor").unlink()  # a VF mid-removal
    r = one(root, "intel_x710")
    assert [d.name for d in r.devices[0].deployables] == ["n1_0000_3b_02_0", "n1_0000_3b_02_1"]
    assert [(e.driver, e.device) for e in r.errors] == [("sysfs", "0000:3b:02.1")]


def test_inspur_nvme(family_tree):
    r = one(family_tree("inspur_nvme"), "inspur_nvme")
    assert r.errors == []
    (dev,) = r.devices
    assert (dev.key, dev.type, dev.vendor, dev.vendor_board_info) == ("inspur_nvme:0000:5e:00.0", "SSD", "0x1bd4", "nvme0")
    (dep,) = dev.deployables
    assert (dep.name, dep.num_accelerators, dep.resource_class) == ("n1_0000_5e_00_0", 1, "CUSTOM_SSD")
    assert dep.traits == ["CUSTOM_SSD_INSPUR", "CUSTOM_SSD_PRODUCT_ID_1003"]
    assert dep.attach_handles[0].attach_type == "PCI"


def test_inspur_nvme_broken_driver_link(family_tree):
    root = family_tree("inspur_nvme")
    link = root / "devices/pci0000:5e/0000:5e:00.0/driver"
    link.unlink()
    link.symlink_to("../../../bus/pci/drivers/gone")
    r = one(root, "inspur_nvme")
    assert r.devices == []
    assert r.errors[0].file.endswith("0000:5e:00.0/driver") and "broken symlink" in r.errors[0].message


def test_every_family_tree_with_all_drivers_has_no_errors(family_tree, tmp_path):
    # the default driver set on each checked-in tree: nothing reported twice, nothing unowned complains
    from rayborg.drivers.sysfs_tree import fixture_tree, fixture_tree_drivers

    for i, fam in enumerate(fixture_tree_drivers()):
        r = discover_host("n1", fixture_tree(fam, tmp_path / str(i)))
        assert r.errors == [], (fam, r.errors)
        assert r.devices, fam
        handles = [h.info_json() for d in r.devices for dep in d.deployables for h in dep.attach_handles]
        assert len(handles) == len(set(handles)), fam

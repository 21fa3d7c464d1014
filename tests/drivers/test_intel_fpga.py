"""Intel FPGA (OPAE): discovery on the fixture tree, bad inputs, and fpgaconf programming."""

from __future__ import annotations

import pytest

from rayborg.drivers import BitstreamError, ProgrammingError, discover_host
from rayborg.drivers.base import DriverContext
from rayborg.drivers.bitstreams import LocalBitstreams
from rayborg.drivers.intel_fpga import IntelFpgaDriver

REGION = "ce48969398f05f33946d560708be108a"
AFU = "d8424dc4a4a3c413f89e433683f9040b"


def report(root, **options):
    return discover_host("node1", root, drivers=["intel_fpga"], options={"intel_fpga": options})


def test_full_report(family_tree):
    r = report(family_tree("intel_fpga"))
    assert r.errors == []
    assert [d.key for d in r.devices] == ["intel_fpga:0000:5e:00.0", "intel_fpga:0000:be:00.0"]
    with_vfs, without = r.devices
    assert (with_vfs.type, with_vfs.vendor, with_vfs.model) == ("FPGA", "0x8086", "PAC_ARRIA10")
    assert with_vfs.controlpath_id.cpid_info == {"bus": "5e", "device": "00", "domain": "0000", "function": "0"}
    assert with_vfs.std_board_info["driver"] == "intel-fpga-pci"
    assert with_vfs.std_board_info["iommu_group"] == "40"
    (dep,) = with_vfs.deployables
    assert dep.name == "node1_0000_5e_00_0"
    assert dep.num_accelerators == 2 and dep.resource_class == "FPGA" and dep.driver_name == "intel_fpga"
    assert dep.traits == ["CUSTOM_FPGA_INTEL", "CUSTOM_FPGA_INTEL_PAC_ARRIA10",
                          f"CUSTOM_FPGA_REGION_INTEL_{REGION.upper()}", f"CUSTOM_FPGA_FUNCTION_ID_INTEL_{AFU.upper()}"]
    assert dep.attributes["rc"] == "FPGA" and dep.attributes["trait0"] == "CUSTOM_FPGA_INTEL"
    assert dep.attributes["trait3"] == f"CUSTOM_FPGA_FUNCTION_ID_INTEL_{AFU.upper()}"
    assert dep.attributes["region_id"] == REGION
    # PF with VFs: one PCI handle per VF, the PF itself is not attachable
    assert [(h.attach_type, h.attach_info["function"]) for h in dep.attach_handles] == [("PCI", "1"), ("PCI", "2")]
    assert all(list(h.attach_info) == ["bus", "device", "domain", "function"] for h in dep.attach_handles)
    (dep2,) = without.deployables
    assert dep2.num_accelerators == 1
    assert dep2.attach_handles[0].attach_info == {"bus": "be", "device": "00", "domain": "0000", "function": "0"}


def test_hash_is_stable_and_changes_with_content(family_tree, builder):
    root = family_tree("intel_fpga")
    first, again = report(root), report(root)
    assert first.content_hash == again.content_hash and len(first.content_hash) == 64
    builder.write("devices/pci0000:be/0000:be:00.0/fpga/intel-fpga-dev.2/intel-fpga-port.2/afu_id", AFU)
    assert report(root).content_hash != first.content_hash


def test_missing_vendor_driver_link_is_an_error_entry_others_still_reported(family_tree, builder):
    root = family_tree("intel_fpga")
    (root / "devices/pci0000:be/0000:be:00.0/driver").unlink()
    r = report(root)
    assert [d.key for d in r.devices] == ["intel_fpga:0000:5e:00.0"]
    (err,) = r.errors
    assert err.driver == "intel_fpga" and err.device == "0000:be:00.0"
    assert err.file.endswith("0000:be:00.0/driver") and "no kernel driver" in err.message


def test_broken_virtfn_link_keeps_the_good_vf(family_tree):
    root = family_tree("intel_fpga")
    link = root / "devices/pci0000:5e/0000:5e:00.0/virtfn1"
    link.unlink()
    link.symlink_to("../0000:5e:07.7")
    r = report(root)
    dep = r.devices[0].deployables[0]
    assert dep.num_accelerators == 1 and len(r.devices) == 2
    (err,) = r.errors
    assert err.file.endswith("virtfn1") and "broken" in err.message and err.device == "0000:5e:00.0"


def test_unreadable_region_file_names_device_and_file(family_tree):
    root = family_tree("intel_fpga")
    f = root / "devices/pci0000:be/0000:be:00.0/fpga/intel-fpga-dev.2/intel-fpga-fme.2/pr/interface_id"
    f.unlink()
    f.mkdir()  # reading a directory fails like an unreadable file does (tests run as root)
    r = report(root)
    assert [d.key for d in r.devices] == ["intel_fpga:0000:5e:00.0"]
    assert r.errors[0].device == "0000:be:00.0"
    assert r.errors[0].file.endswith("0000:be:00.0/fpga/intel-fpga-dev.2/intel-fpga-fme.2/pr/interface_id")
    assert "unreadable" in r.errors[0].message


def test_missing_device_file_is_reported_once_by_sysfs(family_tree):
    root = family_tree("intel_fpga")
    (root / "devices/pci0000:be/0000:be:00.0/device").unlink()  # half-present: vendor but no device id
    r = report(root)
    assert [d.key for d in r.devices] == ["intel_fpga:0000:5e:00.0"]
    (err,) = r.errors
    assert (err.driver, err.device, err.message) == ("sysfs", "0000:be:00.0", "missing sysfs file")
    assert err.file.endswith("0000:be:00.0/device")


def test_non_numeric_vendor_and_numa(family_tree, builder):
    root = family_tree("intel_fpga")
    builder.write("devices/pci0000:be/0000:be:00.0/numa_node", "banana")
    builder.write("devices/pci0000:3b/0000:3b:00.0/vendor", "zz")
    r = report(root)
    assert [d.key for d in r.devices] == ["intel_fpga:0000:5e:00.0"]
    msgs = {(e.driver, e.device): e.message for e in r.errors}
    assert msgs[("intel_fpga", "0000:be:00.0")] == "non-numeric value 'banana'"
    assert msgs[("sysfs", "0000:3b:00.0")].startswith("non-hex value")


def test_broken_top_level_pci_link(family_tree):
    root = family_tree("intel_fpga")
    (root / "bus/pci/devices/0000:99:00.0").symlink_to("../../../devices/pci0000:99/0000:99:00.0")
    r = report(root)
    assert len(r.devices) == 2
    assert [(e.driver, e.device) for e in r.errors] == [("sysfs", "0000:99:00.0")]


def test_stub_when_no_fpga_management_dirs(builder, sysfs):
    builder.pci("0000:af:00.0", vendor="0x8086", device="0x09c4", driver="intel-fpga-pci")
    (dev,) = report(sysfs).devices
    assert dev.stub and dev.deployables[0].traits == ["CUSTOM_FPGA_INTEL", "CUSTOM_FPGA_INTEL_PAC_ARRIA10"]


def test_dfl_layout(builder, sysfs):
    builder.pci("0000:af:00.0", vendor="0x8086", device="0x0b30", driver="dfl-pci", files={
        "fpga_region/region0/dfl-fme.0/dfl-fme-region.1/fpga_region/region1/compat_id": REGION,
        "fpga_region/region0/dfl-port.0/afu_id": AFU})
    dep = report(sysfs).devices[0].deployables[0]
    assert dep.attributes["region_id"] == REGION and dep.attributes["function_id"] == AFU
    assert "CUSTOM_FPGA_INTEL_PAC_N3000" in dep.traits


# ---- programming ------------------------------------------------------------------------

NEW_AFU = "f7df405cbd7acf7222f144b0b93acd18"
AFU_FILE = "devices/pci0000:be/0000:be:00.0/fpga/intel-fpga-dev.2/intel-fpga-port.2/afu_id"


@pytest.fixture
def fpgaconf(make_tool, sysfs):
    # like the real tool: loads the image, after which the port reports the new AFU id
    return make_tool("fpgaconf", f"image = json.loads(pathlib.Path(sys.argv[-1]).read_text())\n"
                                 f"pathlib.Path({str(sysfs / AFU_FILE)!r}).write_text(image['afu_id'] + '\\n')")


def driver(root, **options) -> IntelFpgaDriver:
    return IntelFpgaDriver(DriverContext(hostname="node1", sysfs_root=root, options=options))


def test_program_runs_fpgaconf_and_rediscovers(family_tree, fpgaconf, make_bitstream):
    root = family_tree("intel_fpga")
    make_bitstream("bs-1", NEW_AFU)
    bs = LocalBitstreams(fpgaconf.path.parent.parent / "bitstreams").fetch("bs-1")
    drv = driver(root, tool=str(fpgaconf.path))
    dep = drv.program("node1_0000_be_00_0", bs, timeout=30)
    assert fpgaconf.calls == [["--segment", "0x0000", "--bus", "0xbe", "--device", "0x00", "--function", "0x0",
                               str(bs.path)]]
    assert dep.bitstream_id == "bs-1"
    assert f"CUSTOM_FPGA_FUNCTION_ID_INTEL_{NEW_AFU.upper()}" in dep.traits
    assert dep.attributes["function_id"] == NEW_AFU
    # a later discovery by the same driver instance still knows the bitstream
    again = next(d for d in drv.discover().devices if d.key.endswith("be:00.0")).deployables[0]
    assert again.bitstream_id == "bs-1"


def test_tool_exit_nonzero(family_tree, make_tool, make_bitstream):
    tool = make_tool("fpgaconf", "sys.stderr.write('Error: cannot open FME\\n'); sys.exit(3)")
    bs = LocalBitstreams(make_bitstream("bs-1", NEW_AFU).parent).fetch("bs-1")
    with pytest.raises(ProgrammingError) as exc:
        driver(family_tree("intel_fpga"), tool=str(tool.path)).program("node1_0000_be_00_0", bs, timeout=30)
    e = exc.value
    assert e.exit_code == 3 and "cannot open FME" in str(e) and "intel_fpga:0000:be:00.0" in str(e)
    assert e.tool == str(tool.path)


def test_tool_hangs(family_tree, make_tool, make_bitstream):
    tool = make_tool("fpgaconf", "time.sleep(60)")
    bs = LocalBitstreams(make_bitstream("bs-1", NEW_AFU).parent).fetch("bs-1")
    with pytest.raises(ProgrammingError, match=r"hung: killed after 0.3s.*device intel_fpga:0000:be:00.0"):
        driver(family_tree("intel_fpga"), tool=str(tool.path)).program("node1_0000_be_00_0", bs, timeout=0.3)


def test_tool_missing(family_tree, make_bitstream, tmp_path):
    bs = LocalBitstreams(make_bitstream("bs-1", NEW_AFU).parent).fetch("bs-1")
    with pytest.raises(ProgrammingError, match="vendor tool not found"):
        driver(family_tree("intel_fpga"), tool=str(tmp_path / "nope")).program("node1_0000_be_00_0", bs)


@pytest.mark.parametrize("meta, message", [
    ({"vendor": "Xilinx"}, "is for vendor 'Xilinx'"),
    ({"board": "KU115"}, "is for board 'KU115'"),
    ({"region_uuid": "11111111-2222-3333-4444-555555555555"}, "needs region"),
])
def test_bitstream_metadata_must_match_device(family_tree, fpgaconf, make_bitstream, meta, message):
    bs = LocalBitstreams(make_bitstream("bs-1", NEW_AFU, **meta).parent).fetch("bs-1")
    with pytest.raises(BitstreamError, match=message):
        driver(family_tree("intel_fpga"), tool=str(fpgaconf.path)).program("node1_0000_be_00_0", bs)
    assert fpgaconf.calls == []


def test_bitstream_missing(family_tree, make_bitstream):
    store = LocalBitstreams(make_bitstream("bs-1", NEW_AFU).parent)
    with pytest.raises(BitstreamError, match="bitstream nope does not exist"):
        store.fetch("nope")
    (store.dir / "bs-1.gbs").unlink()
    with pytest.raises(BitstreamError, match="bs-1.gbs does not exist"):
        store.fetch("bs-1")


def test_unknown_deployable(family_tree, fpgaconf, make_bitstream):
    bs = LocalBitstreams(make_bitstream("bs-1", NEW_AFU).parent).fetch("bs-1")
    with pytest.raises(BitstreamError, match="no deployable named 'node1_nope'"):
        driver(family_tree("intel_fpga"), tool=str(fpgaconf.path)).program("node1_nope", bs)

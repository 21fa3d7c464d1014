"""Xilinx and Inspur FPGA drivers: reports and programming with stand-in vendor tools."""

from __future__ import annotations

import pytest

from rayborg.drivers import BitstreamError, HostDrivers, ProgrammingError, discover_host
from rayborg.drivers.bitstreams import LocalBitstreams

SHELL = "862c7020a250293e32036f19956669e5"
LOGIC = "a1f2d4c3b2a1908f7e6d5c4b3a291807"
NEW = "5d4c3b2a19087f6e5d4c3b2a19087f6e"


def test_xilinx_report(family_tree):
    r = discover_host("n1", family_tree("xilinx_fpga"), drivers=["xilinx_fpga"])
    assert r.errors == []
    (dev,) = r.devices
    assert (dev.key, dev.type, dev.vendor, dev.model) == ("xilinx_fpga:0000:3b:00.0", "FPGA", "0x10ee", "U200")
    assert dev.controlpath_id.cpid_info == {"bus": "3b", "device": "00", "domain": "0000", "function": "0"}
    assert dev.std_board_info["user_pf"] == "0000:3b:00.1"
    (dep,) = dev.deployables
    assert (dep.name, dep.num_accelerators, dep.resource_class, dep.driver_name) == (
        "n1_0000_3b_00_0", 1, "FPGA", "xilinx_fpga")
    assert dep.traits == ["CUSTOM_FPGA_XILINX", "CUSTOM_FPGA_PRODUCT_ID_5000",
                          f"CUSTOM_FPGA_REGION_XILINX_{SHELL.upper()}", f"CUSTOM_FPGA_FUNCTION_ID_XILINX_{LOGIC.upper()}"]
    # mgmt PF + user PF: two handles for one accelerator
    assert [h.attach_info["function"] for h in dep.attach_handles] == ["0", "1"]


def test_xilinx_without_xrt_user_pf(family_tree):
    root = family_tree("xilinx_fpga")
    (root / "bus/pci/devices/0000:3b:00.1").unlink()
    r = discover_host("n1", root, drivers=["xilinx_fpga"])
    assert len(r.devices[0].deployables[0].attach_handles) == 1
    (err,) = r.errors
    assert "user PF 0000:3b:00.1 absent" in err.message and err.device == "0000:3b:00.0"


@pytest.fixture
def xbmgmt(make_tool, sysfs):
    logic = sysfs / "devices/pci0000:3b/0000:3b:00.0/logic_uuids"
    return make_tool("xbmgmt", "image = json.loads(pathlib.Path(sys.argv[-1]).read_text())\n"
                               f"pathlib.Path({str(logic)!r}).write_text(image['afu_id'] + '\\n')")


def test_xilinx_program_through_host_drivers(family_tree, xbmgmt, make_bitstream):
    root = family_tree("xilinx_fpga")
    bs_dir = make_bitstream("xbs-1", NEW, vendor="Xilinx", board="U200", region_uuid=SHELL).parent
    host = HostDrivers("n1", sysfs_root=root, drivers=["xilinx_fpga"],
                       options={"xilinx_fpga": {"tool": str(xbmgmt.path)}, "bitstreams": {"dir": str(bs_dir)}})
    dep = host.program("xilinx_fpga", "n1_0000_3b_00_0", "xbs-1", timeout=30)  # image id, resolved locally
    assert xbmgmt.calls == [["program", "--device", "0000:3b:00.0", "--base", "--image", str(bs_dir / "xbs-1.gbs")]]
    assert dep.bitstream_id == "xbs-1" and dep.traits[-1] == f"CUSTOM_FPGA_FUNCTION_ID_XILINX_{NEW.upper()}"
    assert host.discover().devices[0].deployables[0].bitstream_id == "xbs-1"


def test_xilinx_program_wrong_board(family_tree, xbmgmt, make_bitstream):
    bs = LocalBitstreams(make_bitstream("xbs-1", NEW, vendor="Xilinx", board="U250").parent).fetch("xbs-1")
    host = HostDrivers("n1", sysfs_root=family_tree("xilinx_fpga"), drivers=["xilinx_fpga"],
                       options={"xilinx_fpga": {"tool": str(xbmgmt.path)}})
    with pytest.raises(BitstreamError, match="is for board 'U250'.*device xilinx_fpga:0000:3b:00.0"):
        host.program("xilinx_fpga", "n1_0000_3b_00_0", bs)
    assert xbmgmt.calls == []


def test_inspur_fpga_report_and_program(family_tree, make_tool, make_bitstream):
    root = family_tree("inspur_fpga")
    r = discover_host("n1", root, drivers=["inspur_fpga"])
    assert r.errors == [] and [d.key for d in r.devices] == ["inspur_fpga:0000:af:00.0", "inspur_fpga:0000:d8:00.0"]
    dep = r.devices[1].deployables[0]
    assert dep.traits == ["CUSTOM_FPGA_INSPUR", "CUSTOM_FPGA_PRODUCT_ID_A115"] and dep.resource_class == "FPGA"
    assert dep.num_accelerators == 1 and dep.bitstream_id is None
    assert "bsp env=/var/lib/inspur-fpga" in r.devices[0].vendor_board_info

    aocl = make_tool("aocl", "pathlib.Path(sys.argv[0] + '.env').write_text(os.environ['AOCL_BOARD_PACKAGE_ROOT'])")
    bs = LocalBitstreams(make_bitstream("ibs", NEW, vendor="Inspur", board="a115").parent).fetch("ibs")
    host = HostDrivers("n1", sysfs_root=root, drivers=["inspur_fpga"],
                       options={"inspur_fpga": {"tool": str(aocl.path), "bsp_env": "/opt/bsp"}})
    dep = host.program("inspur_fpga", "n1_0000_d8_00_0", bs, timeout=30)
    assert aocl.calls == [["program", "acl1", str(bs.path)]]
    assert aocl.path.with_suffix(".env").read_text() == "/opt/bsp"
    assert dep.bitstream_id == "ibs" and dep.traits[-1] == f"CUSTOM_FPGA_FUNCTION_ID_INSPUR_{NEW.upper()}"


def test_program_with_a_driver_that_cannot(family_tree):
    host = HostDrivers("n1", sysfs_root=family_tree("inspur_nvme"), drivers=["inspur_nvme"])
    with pytest.raises(ProgrammingError, match="driver inspur_nvme cannot program"):
        host.program("inspur_nvme", "n1_0000_5e_00_0", "x")


def test_program_by_id_without_a_source(family_tree, xbmgmt):
    host = HostDrivers("n1", sysfs_root=family_tree("xilinx_fpga"), drivers=["xilinx_fpga"])
    with pytest.raises(BitstreamError, match="no bitstream source is configured"):
        host.program("xilinx_fpga", "n1_0000_3b_00_0", "xbs-1")

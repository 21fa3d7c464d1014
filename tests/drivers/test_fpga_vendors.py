"""Xilinx and Inspur FPGA drivers: reports, programming with stand-in vendor tools, and those tools failing."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from rayborg.drivers import BitstreamError, HostDrivers, ProgrammingError, discover_host
from rayborg.drivers.bitstreams import LocalBitstreams
from sysfs_helpers import expected_pci_device, pci_handle

SHELL = "862c7020a250293e32036f19956669e5"
LOGIC = "a1f2d4c3b2a1908f7e6d5c4b3a291807"
NEW = "5d4c3b2a19087f6e5d4c3b2a19087f6e"


def test_xilinx_report(family_tree):
    r = discover_host("n1", family_tree("xilinx_fpga"), drivers=["xilinx_fpga"])
    assert r.errors == []
    # control path: the mgmt PF; mgmt PF + user PF: two handles for one accelerator
    assert [d.model_dump() for d in r.devices] == [expected_pci_device(
        "xilinx_fpga", "0000:3b:00.0", type="FPGA", vendor="0x10ee", model="U200",
        board={"device_id": "0x5000", "class": "0x120000", "vendor_id": "0x10ee", "numa_node": "0",
               "driver": "xclmgmt", "user_pf": "0000:3b:00.1"},
        rc="FPGA", num=1, handles=[pci_handle("0000:3b:00.0"), pci_handle("0000:3b:00.1")],
        traits=["CUSTOM_FPGA_XILINX", "CUSTOM_FPGA_PRODUCT_ID_5000", f"CUSTOM_FPGA_REGION_XILINX_{SHELL.upper()}",
                f"CUSTOM_FPGA_FUNCTION_ID_XILINX_{LOGIC.upper()}"],
        attributes={"region_id": SHELL, "function_id": LOGIC})]


def test_xilinx_other_classes_are_not_fpgas(family_tree, builder):
    root = family_tree("xilinx_fpga")
    # Xilinx-vendor functions 0 that are no processing accelerator: a memory controller, a network card
    builder.pci("0000:5e:00.0", vendor="0x10ee", device="0x9038", cls="0x058000")
    builder.pci("0000:60:00.0", vendor="0x10ee", device="0x903f", cls="0x020000")
    r = discover_host("n1", root, drivers=["xilinx_fpga"])
    assert r.errors == [] and [d.key for d in r.devices] == ["xilinx_fpga:0000:3b:00.0"]


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
    assert r.errors == []  # the Inspur NVMe SSD (class 0x0108) is not an FPGA
    assert [d.model_dump() for d in r.devices] == [expected_pci_device(
        "inspur_fpga", address, type="FPGA", vendor="0x1bd4", model="F10A",
        board={"device_id": "0xa115", "class": "0x120000", "vendor_id": "0x1bd4", "numa_node": "1",
               "driver": "aclpci_a10_drv"},
        rc="FPGA", traits=["CUSTOM_FPGA_INSPUR", "CUSTOM_FPGA_PRODUCT_ID_A115"], num=1,
        vendor_board_info="bsp env=/var/lib/inspur-fpga cmd=aocl") for address in ("0000:af:00.0", "0000:d8:00.0")]

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


# ---- vendor tool failures: xbmgmt (Xilinx) and aocl (Inspur) ---------------------------------


@dataclass(frozen=True)
class Vendor:
    driver: str
    tool: str  # the stand-in's name: what the driver runs by default
    deployable: str
    key: str
    meta: dict[str, str]  # bitstream metadata that fits the device
    argv: Callable[[Path], list[str]]  # the tool's expected arguments for an image

    def host(self, root: Path, **options) -> HostDrivers:
        return HostDrivers("n1", sysfs_root=root, drivers=[self.driver], options={self.driver: options})

    def bitstream_id(self, host: HostDrivers) -> str | None:
        return next(dep.bitstream_id for dep in host.discover().deployables() if dep.name == self.deployable)


VENDORS = [
    Vendor("xilinx_fpga", "xbmgmt", "n1_0000_3b_00_0", "xilinx_fpga:0000:3b:00.0",
           {"vendor": "Xilinx", "board": "U200", "region_uuid": SHELL},
           lambda image: ["program", "--device", "0000:3b:00.0", "--base", "--image", str(image)]),
    Vendor("inspur_fpga", "aocl", "n1_0000_d8_00_0", "inspur_fpga:0000:d8:00.0",
           {"vendor": "Inspur", "board": "a115"}, lambda image: ["program", "acl1", str(image)]),
]


@pytest.fixture(params=VENDORS, ids=lambda v: v.driver)
def vendor(request) -> Vendor:
    return request.param


@pytest.fixture
def bitstream(vendor, make_bitstream):
    return LocalBitstreams(make_bitstream("bs-1", NEW, **vendor.meta).parent).fetch("bs-1")


def test_tool_exit_nonzero(vendor, family_tree, make_tool, bitstream):
    tool = make_tool(vendor.tool, "sys.stderr.write('ERROR: card is busy\\n'); sys.exit(3)")
    host = vendor.host(family_tree(vendor.driver), tool=str(tool.path))
    with pytest.raises(ProgrammingError) as exc:
        host.program(vendor.driver, vendor.deployable, bitstream, timeout=30)
    e = exc.value
    assert (e.device, e.tool, e.exit_code) == (vendor.key, str(tool.path), 3)
    assert str(e) == (f"vendor tool failed (device {vendor.key}; tool {tool.path}; exit code 3; "
                      "stderr: ERROR: card is busy)")
    assert tool.calls == [vendor.argv(bitstream.path)]
    assert vendor.bitstream_id(host) is None  # a failed load is not remembered as loaded


def test_tool_hangs_past_the_configured_timeout(vendor, family_tree, make_tool, bitstream):
    tool = make_tool(vendor.tool, "sys.stderr.write('erasing flash\\n'); sys.stderr.flush(); time.sleep(60)")
    host = vendor.host(family_tree(vendor.driver), tool=str(tool.path), program_timeout=1)
    start = time.monotonic()
    with pytest.raises(ProgrammingError) as exc:
        host.program(vendor.driver, vendor.deployable, bitstream)  # no timeout argument: the option's
    assert time.monotonic() - start < 10  # not the tool's 60 s
    assert str(exc.value) == (f"vendor tool hung: killed after 1s (device {vendor.key}; tool {tool.path}; "
                              "stderr: erasing flash)")
    assert vendor.bitstream_id(host) is None


def _alive(pid: int) -> bool:
    try:  # a zombie is dead: nobody may reap a reparented grandchild soon
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_hung_tool_is_killed_with_the_children_it_started(vendor, family_tree, make_tool, bitstream, tmp_path):
    # vendor tools are often wrappers: killing only the wrapper leaves the flasher running
    pidfile = tmp_path / "child.pid"
    tool = make_tool(vendor.tool, "import subprocess\n"
                                  "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
                                  f"pathlib.Path({str(pidfile)!r}).write_text(str(child.pid))\n"
                                  "child.wait()")
    host = vendor.host(family_tree(vendor.driver), tool=str(tool.path), program_timeout=1)
    with pytest.raises(ProgrammingError, match="vendor tool hung"):
        host.program(vendor.driver, vendor.deployable, bitstream)
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert not _alive(pid)
    finally:
        if _alive(pid):  # only the stand-in's own child, by its pid
            os.kill(pid, signal.SIGKILL)


def test_tool_missing(vendor, family_tree, bitstream, tmp_path):
    host = vendor.host(family_tree(vendor.driver), tool=str(tmp_path / "nope" / vendor.tool))
    with pytest.raises(ProgrammingError) as exc:
        host.program(vendor.driver, vendor.deployable, bitstream, timeout=30)
    assert str(exc.value) == f"vendor tool not found (device {vendor.key}; tool {tmp_path / 'nope' / vendor.tool})"


@pytest.mark.parametrize("content, mode, message", [
    ("#!/bin/sh\nexit 0\n", 0o644, "vendor tool not executable"),
    ("\x7fELF not really\n", 0o755, "vendor tool could not run: Exec format error"),
], ids=["no x bit", "not a program"])
def test_tool_that_cannot_run(vendor, family_tree, bitstream, tmp_path, content, mode, message):
    path = tmp_path / vendor.tool
    path.write_text(content)
    path.chmod(mode)
    host = vendor.host(family_tree(vendor.driver), tool=str(path))
    with pytest.raises(ProgrammingError) as exc:
        host.program(vendor.driver, vendor.deployable, bitstream, timeout=30)
    assert str(exc.value) == f"{message} (device {vendor.key}; tool {path})"


def test_tool_output_that_is_not_utf8(vendor, family_tree, make_tool, bitstream):
    tool = make_tool(vendor.tool, "sys.stderr.buffer.write(b'flash \\xff\\xfe failed\\n'); sys.exit(1)")
    host = vendor.host(family_tree(vendor.driver), tool=str(tool.path))
    with pytest.raises(ProgrammingError, match="exit code 1; stderr: flash \ufffd\ufffd failed"):
        host.program(vendor.driver, vendor.deployable, bitstream, timeout=30)


@pytest.mark.parametrize("value", ["ten", 0, -5, float("inf"), None])
def test_bad_program_timeout_option(vendor, family_tree, make_tool, bitstream, value):
    tool = make_tool(vendor.tool)
    host = vendor.host(family_tree(vendor.driver), tool=str(tool.path), program_timeout=value)
    with pytest.raises(ProgrammingError) as exc:
        host.program(vendor.driver, vendor.deployable, bitstream)
    assert str(exc.value) == (f"option program_timeout must be a positive number of seconds, got {value!r} "
                              f"(device {vendor.key}; tool {tool.path})")
    assert tool.calls == []


def test_inspur_default_aocl_comes_from_path(family_tree, make_tool, make_bitstream, monkeypatch, tmp_path):
    root = family_tree("inspur_fpga")
    bs = LocalBitstreams(make_bitstream("ibs", NEW, vendor="Inspur", board="a115").parent).fetch("ibs")
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # the BSP is not installed
    host = HostDrivers("n1", sysfs_root=root, drivers=["inspur_fpga"])
    with pytest.raises(ProgrammingError) as exc:
        host.program("inspur_fpga", "n1_0000_d8_00_0", bs, timeout=30)
    assert str(exc.value) == "vendor tool not found (device inspur_fpga:0000:d8:00.0; tool aocl)"
    aocl = make_tool("aocl")
    monkeypatch.setenv("PATH", str(aocl.path.parent))
    assert host.program("inspur_fpga", "n1_0000_d8_00_0", bs, timeout=30).bitstream_id == "ibs"
    assert aocl.calls == [["program", "acl1", str(bs.path)]]


def test_inspur_acl_numbers_count_only_boards_on_the_bsp_driver(family_tree, builder, make_tool, make_bitstream):
    # aocl numbers what its driver probed: an unbound board (error entry) or one on vfio-pci has no acl<N>
    root = family_tree("inspur_fpga")
    aocl = make_tool("aocl")
    bs = LocalBitstreams(make_bitstream("ibs", NEW, vendor="Inspur", board="a115").parent).fetch("ibs")
    af_driver = "devices/pci0000:af/0000:af:00.0/driver"

    def to_vfio() -> None:
        (root / "bus/pci/drivers/vfio-pci").mkdir(parents=True)
        builder.link(af_driver, "bus/pci/drivers/vfio-pci")

    for rebind in (lambda: (root / af_driver).unlink(), to_vfio):
        rebind()
        host = HostDrivers("n1", sysfs_root=root, drivers=["inspur_fpga"],
                           options={"inspur_fpga": {"tool": str(aocl.path)}})
        host.program("inspur_fpga", "n1_0000_d8_00_0", bs, timeout=30)
    assert aocl.calls == [["program", "acl0", str(bs.path)]] * 2
    with pytest.raises(ProgrammingError) as exc:  # the vfio-pci one belongs to a VM now
        host.program("inspur_fpga", "n1_0000_af_00_0", bs, timeout=30)
    assert str(exc.value) == (f"bound to vfio-pci, not to the BSP driver: aocl cannot reach it "
                              f"(device inspur_fpga:0000:af:00.0; tool {aocl.path})")
    assert len(aocl.calls) == 2

"""Nested FPGA deployables (queens fpga-model/driver specs: PR regions, `pr_num`): the Intel driver on
the DFL fixture tree with a two-region card, per-region programming, and the store's tree of it."""

from __future__ import annotations

import json

import pytest

from rayborg.drivers import BitstreamError, discover_host
from rayborg.drivers.base import DriverContext
from rayborg.drivers.bitstreams import LocalBitstreams
from rayborg.drivers.intel_fpga import IntelFpgaDriver
from rayborg.drivers.sysfs_tree import FIXTURE_TREES, build_tree

TREE = FIXTURE_TREES / "intel_fpga" / "dfl_regions.json"
COMPAT = "9346116d5b5a5bd3ab1b1b7ab25c7cd8"
AFU = "d8424dc4a4a3c413f89e433683f9040b"
ZERO = "0" * 32
NEW_AFU = "f7df405cbd7acf7222f144b0b93acd18"
PARENT, REGION0, REGION1 = "node1_0000_3b_00_0", "node1_0000_3b_00_0_region0", "node1_0000_3b_00_0_region1"
PORT_AFU = {"1": "devices/pci0000:3b/0000:3b:00.1/fpga_region/region3/dfl-port.0/afu_id",
            "2": "devices/pci0000:3b/0000:3b:00.2/fpga_region/region4/dfl-port.1/afu_id"}


@pytest.fixture
def root(sysfs):
    return build_tree(sysfs, TREE)


def report(root):
    return discover_host("node1", root, drivers=["intel_fpga"])


def test_two_region_card_is_a_parent_with_one_child_per_region(root):
    r = report(root)
    assert r.errors == []
    nested = next(d for d in r.devices if d.key == "intel_fpga:0000:3b:00.0")
    assert nested.std_board_info["pr_num"] == "2" and nested.model == "PAC_D5005"
    (parent,) = nested.deployables
    # the whole FPGA (static region): no accelerators, no handles, vendor/family traits only
    assert parent.name == PARENT and parent.num_accelerators == 0 and parent.attach_handles == []
    assert parent.traits == ["CUSTOM_FPGA_INTEL", "CUSTOM_FPGA_INTEL_PAC_D5005"]
    assert "region_id" not in parent.attributes and parent.resource_class == "FPGA"
    r0, r1 = parent.children
    assert (r0.name, r1.name) == (REGION0, REGION1)
    for region, vf, afu in ((r0, "1", AFU), (r1, "2", ZERO)):
        assert region.num_accelerators == 1 and region.resource_class == "FPGA" and region.children == []
        # each region's one handle is the VF that carries its port
        assert [h.attach_info for h in region.attach_handles] == [
            {"domain": "0000", "bus": "3b", "device": "00", "function": vf}]
        assert region.attributes["region_id"] == COMPAT and region.attributes["function_id"] == afu
        assert region.traits == ["CUSTOM_FPGA_INTEL", "CUSTOM_FPGA_INTEL_PAC_D5005",
                                 f"CUSTOM_FPGA_REGION_INTEL_{COMPAT.upper()}",
                                 f"CUSTOM_FPGA_FUNCTION_ID_INTEL_{afu.upper()}"]


def test_single_region_dfl_card_is_one_deployable_as_before(root):
    single = next(d for d in report(root).devices if d.key == "intel_fpga:0000:af:00.0")
    (dep,) = single.deployables
    assert dep.children == [] and dep.num_accelerators == 1 and dep.name == "node1_0000_af_00_0"
    assert dep.attach_handles[0].attach_info["bus"] == "af" and single.std_board_info["pr_num"] == "1"
    assert dep.attributes["function_id"] == AFU


def test_the_existing_intel_example_host_is_unchanged(family_tree):
    r = discover_host("node1", family_tree("intel_fpga"), drivers=["intel_fpga"])
    assert all(len(d.deployables) == 1 and d.deployables[0].children == [] for d in r.devices)
    assert [d.deployables[0].num_accelerators for d in r.devices] == [2, 1]


def test_ports_on_the_pf_alone_make_regions_too(builder, sysfs):
    # no VFs: both ports stay on the PF, which carries both regions
    builder.pci("0000:af:00.0", vendor="0x8086", device="0x0b30", driver="dfl-pci", files={
        "fpga_region/region0/dfl-fme.0/dfl-fme-region.1/fpga_region/region1/compat_id": COMPAT,
        "fpga_region/region0/dfl-fme.0/dfl-fme-region.2/fpga_region/region2/compat_id": COMPAT,
        "fpga_region/region0/dfl-port.0/afu_id": AFU, "fpga_region/region0/dfl-port.1/afu_id": ZERO})
    (dev,) = report(sysfs).devices
    (parent,) = dev.deployables
    assert [c.name for c in parent.children] == ["node1_0000_af_00_0_region0", "node1_0000_af_00_0_region1"]
    assert [c.attributes["function_id"] for c in parent.children] == [AFU, ZERO]


# ---- programming one region ---------------------------------------------------------------


@pytest.fixture
def fpgaconf(make_tool, sysfs):
    # like the real tool: loads the image into the port of the function it is given
    return make_tool("fpgaconf", "image = json.loads(pathlib.Path(sys.argv[-1]).read_text())\n"
                                 "fn = sys.argv[sys.argv.index('--function') + 1].removeprefix('0x')\n"
                                 f"ports = {json.dumps({k: str(sysfs / v) for k, v in PORT_AFU.items()})}\n"
                                 "pathlib.Path(ports[fn]).write_text(image['afu_id'] + '\\n')")


def driver(root, tool) -> IntelFpgaDriver:
    return IntelFpgaDriver(DriverContext(hostname="node1", sysfs_root=root, options={"tool": str(tool)}))


def test_program_one_region_leaves_the_other_alone(root, fpgaconf, make_bitstream):
    make_bitstream("bs-r1", NEW_AFU, board="PAC_D5005", region_uuid=COMPAT)
    bs = LocalBitstreams(fpgaconf.path.parent.parent / "bitstreams").fetch("bs-r1")
    drv = driver(root, fpgaconf.path)
    dep = drv.program(REGION1, bs, timeout=30)
    # the tool is pointed at the VF carrying region 1's port, not at the PF or region 0's VF
    assert fpgaconf.calls == [["--segment", "0x0000", "--bus", "0x3b", "--device", "0x00", "--function", "0x2",
                               str(bs.path)]]
    assert dep.name == REGION1 and dep.bitstream_id == "bs-r1" and dep.attributes["function_id"] == NEW_AFU
    (parent,) = next(d for d in drv.discover().devices if d.key.endswith("3b:00.0")).deployables
    r0, r1 = parent.children
    assert r1.bitstream_id == "bs-r1" and r0.bitstream_id is None and r0.attributes["function_id"] == AFU
    assert parent.bitstream_id is None


def test_a_bitstream_for_another_region_is_refused_before_the_tool_runs(root, fpgaconf, make_bitstream):
    make_bitstream("bs-x", NEW_AFU, board="PAC_D5005", region_uuid="11111111-2222-3333-4444-555555555555")
    bs = LocalBitstreams(fpgaconf.path.parent.parent / "bitstreams").fetch("bs-x")
    with pytest.raises(BitstreamError, match="needs region"):
        driver(root, fpgaconf.path).program(REGION0, bs, timeout=30)
    assert fpgaconf.calls == []


def test_an_unknown_region_name_is_a_bitstream_error(root, fpgaconf, make_bitstream):
    bs = LocalBitstreams(make_bitstream("bs-r1", NEW_AFU, board="PAC_D5005", region_uuid=COMPAT).parent).fetch("bs-r1")
    with pytest.raises(BitstreamError, match="no deployable named"):
        driver(root, fpgaconf.path).program("node1_0000_3b_00_0_region7", bs, timeout=30)
    assert fpgaconf.calls == []

"""Every PCI driver against the same catalogue of broken sysfs entries (tests/sysfs_helpers.py: PCI_BAD_INPUTS).

Each family's fixture tree gets one function broken; that must become exactly one error entry naming
the function and the file, while the family's other devices are still reported in full.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from rayborg.drivers import discover_host
from rayborg.drivers.base import DriverContext
from rayborg.drivers.intel_qat import IntelQatDriver
from rayborg.drivers.sysfs_tree import SysfsBuilder, fixture_tree
from sysfs_helpers import PCI_BAD_INPUTS, UNBOUND


@dataclass(frozen=True)
class Family:
    driver: str
    broken: str  # the function the bad input is applied to
    kept: list[str]  # keys still reported whatever happens to `broken`
    unbound: Literal["error", "reported"]  # a function with no driver link
    with_drivers: tuple[str, ...] = ()  # run next to these (so no other driver picks the broken one up)
    extra: list[dict[str, Any]] = field(default_factory=list)  # added to the fixture: another device to keep

    def tree(self, root: Path) -> Path:
        fixture_tree(self.driver, root)
        SysfsBuilder(root).apply({"pci": self.extra})
        return root

    def discover(self, root: Path):
        return discover_host("n1", root, drivers=[self.driver, *self.with_drivers])


FAMILIES = [
    Family("intel_fpga", "0000:be:00.0", ["intel_fpga:0000:5e:00.0"], "error"),
    Family("xilinx_fpga", "0000:3b:00.0", ["xilinx_fpga:0000:d8:00.0"], "reported", extra=[
        {"address": "0000:d8:00.0", "vendor": "0x10ee", "device": "0x5004", "driver": "xclmgmt"},
        {"address": "0000:d8:00.1", "vendor": "0x10ee", "device": "0x5005", "driver": "xocl"}]),
    Family("inspur_fpga", "0000:af:00.0", ["inspur_fpga:0000:d8:00.0", "inspur_nvme:0000:5e:00.0"], "error",
           ("inspur_nvme",)),  # the same vendor's SSD stays with inspur_nvme whatever the FPGA does
    Family("nvidia_gpu", "0000:af:00.0", ["nvidia_gpu:0000:3b:00.0"], "reported", ("nvidia_vgpu",)),
    Family("nvidia_vgpu", "0000:86:00.0", ["nvidia_vgpu:0000:af:00.0"], "reported", ("nvidia_gpu",)),
    Family("intel_qat", "0000:3f:00.0", ["intel_qat:0000:3d:00.0"], "error"),
    Family("intel_x710", "0000:3b:00.1", ["intel_x710:0000:3b:00.0"], "error"),
    Family("inspur_nvme", "0000:5e:00.0", ["inspur_nvme:0000:60:00.0"], "reported", ("inspur_fpga",), extra=[
        {"address": "0000:60:00.0", "vendor": "0x1bd4", "device": "0x1003", "class": "0x010802", "driver": "nvme"}]),
]


@pytest.fixture(params=FAMILIES, ids=lambda f: f.driver)
def family(request) -> Family:
    return request.param


def keys(report) -> list[str]:
    return [d.key for d in report.devices]


def test_unbroken_tree_reports_the_broken_one_too(family, sysfs):
    # guards the tests below: the function they break is really one the driver reports
    r = family.discover(family.tree(sysfs))
    assert r.errors == [] and keys(r) == sorted([*family.kept, f"{family.driver}:{family.broken}"])


@pytest.mark.parametrize("bad", PCI_BAD_INPUTS, ids=lambda b: b.name)
def test_bad_input_is_one_error_entry_and_the_rest_is_reported(family, bad, sysfs, builder):
    root = family.tree(sysfs)
    good = {d.key: d for d in family.discover(root).devices if d.key in family.kept}
    bad.apply(builder, family.broken)
    r = family.discover(root)
    assert keys(r) == family.kept
    assert {d.key: d for d in r.devices} == good  # untouched, not just present
    (err,) = r.errors
    assert (err.driver, err.device) == ("sysfs" if bad.sysfs else family.driver, family.broken)
    assert err.file.endswith(bad.file_suffix(family.broken)), err.file
    assert bad.message in err.message


def test_function_without_driver_link(family, sysfs, builder):
    root = family.tree(sysfs)
    UNBOUND.apply(builder, family.broken)
    r = family.discover(root)
    if family.unbound == "error":  # needs its kernel driver to be managed at all: skipped, said why
        assert keys(r) == family.kept
        (err,) = r.errors
        assert (err.driver, err.device) == (family.driver, family.broken)
        assert err.file.endswith(UNBOUND.file_suffix(family.broken)) and UNBOUND.message in err.message
    else:  # passthrough or the host's own driver binds it later: still a device, with no driver
        assert r.errors == []
        dev = next(d for d in r.devices if d.key == f"{family.driver}:{family.broken}")
        assert dev.std_board_info["driver"] == ""


@pytest.mark.parametrize("driver, pf, vf_deployables", [
    ("intel_qat", "0000:3d:00.0", ["n1_0000_3d_01_0"]),
    ("intel_x710", "0000:3b:00.0", ["n1_0000_3b_02_0"]),
])
def test_broken_virtfn_link_drops_only_that_vf(family_tree, builder, driver, pf, vf_deployables):
    root = family_tree(driver)
    builder.broken_link(Path(builder.device_dir(pf).relative_to(root)) / "virtfn1")
    r = discover_host("n1", root, drivers=[driver])
    dev = next(d for d in r.devices if d.key == f"{driver}:{pf}")
    assert [d.name for d in dev.deployables] == vf_deployables
    assert len(r.devices) == 2  # the other PF too
    (err,) = r.errors
    assert (err.driver, err.device) == (driver, pf) and err.file.endswith(f"{pf}/virtfn1")
    assert "broken virtfn symlink" in err.message


def test_os_error_in_a_build_names_its_file(family_tree):
    # a driver bug or a race the sysfs helpers don't cover: still an entry that says which file
    class Racy(IntelQatDriver):
        def build(self, fn):
            raise FileNotFoundError(2, "No such file or directory", str(fn.file("sriov_vf_device")))

    found = Racy(DriverContext(hostname="n1", sysfs_root=family_tree("intel_qat"))).discover()
    assert found.devices == []
    assert [(e.device, e.file.rsplit("/", 2)[-2:]) for e in found.errors] == [
        ("0000:3d:00.0", ["0000:3d:00.0", "sriov_vf_device"]), ("0000:3f:00.0", ["0000:3f:00.0", "sriov_vf_device"])]
    assert found.errors[0].message.startswith("FileNotFoundError: [Errno 2] No such file or directory")

"""The tree.json format and the example hosts shipped with the drivers (rayborg.drivers.sysfs_tree)."""

from __future__ import annotations

import json

import pytest

from rayborg.drivers import discover_host
from rayborg.drivers.registry import DRIVERS
from rayborg.drivers.sysfs_tree import FIXTURE_TREES, build_tree, fixture_tree, fixture_tree_drivers


def test_every_example_host_is_named_after_a_driver_that_claims_its_devices(tmp_path):
    names = fixture_tree_drivers()
    assert names and set(names) <= set(DRIVERS)
    for driver in names:
        report = discover_host("n1", fixture_tree(driver, tmp_path / driver), drivers=[driver])
        assert report.devices and not report.errors, driver
        assert {d.key.split(":")[0] for d in report.devices} == {driver}, driver


def test_an_unknown_driver_name_says_which_exist(tmp_path):
    with pytest.raises(ValueError, match=r"no example host for driver 'intel-fpga'; there are: .*intel_fpga"):
        fixture_tree("intel-fpga", tmp_path)


def test_the_example_hosts_are_package_data_beside_the_module():
    # fixture_tree() reads them from the installed package, not from a checkout's tests/
    assert FIXTURE_TREES.parent.name == "drivers" and (FIXTURE_TREES / "intel_fpga" / "tree.json").is_file()


@pytest.mark.parametrize("form", ["dict", "text", "file", "path"])
def test_build_tree_takes_a_description_in_any_form(tmp_path, form):
    desc = {"pci": [{"address": "0000:5e:00.0", "vendor": "0x8086", "device": "0x09c4", "driver": "intel-fpga-pci",
                     "vfs": {"first": "0000:5e:00.1", "count": 2, "device": "0x09c5", "driver": "vfio-pci"}}]}
    (tmp_path / "tree.json").write_text(json.dumps(desc))
    given = {"dict": desc, "text": json.dumps(desc), "file": str(tmp_path / "tree.json"),
             "path": tmp_path / "tree.json"}[form]
    root = build_tree(tmp_path / "sys", given)
    pf = root / "bus" / "pci" / "devices" / "0000:5e:00.0"
    assert (pf / "vendor").read_text() == "0x8086\n" and (pf / "sriov_numvfs").read_text() == "2\n"
    assert (pf / "virtfn1").resolve() == (root / "bus" / "pci" / "devices" / "0000:5e:00.2").resolve()
    assert (pf / "driver").resolve().name == "intel-fpga-pci"

"""discover_host / HostDrivers: defaults, isolation of failing drivers, report models and hashing."""

from __future__ import annotations

import pytest

from rayborg.drivers import REAL_DRIVERS, HostDrivers, HostReport, UnknownDriver, discover_host
from rayborg.drivers.base import DriverDeployable
from rayborg.drivers.intel_fpga import IntelFpgaDriver


def test_default_runs_every_real_driver_not_fake(sysfs):
    r = discover_host("n1", sysfs)
    assert r.drivers == sorted(REAL_DRIVERS) and "fake" not in r.drivers
    assert r.devices == [] and r.errors == []
    assert set(REAL_DRIVERS) == {"intel_fpga", "inspur_fpga", "xilinx_fpga", "nvidia_gpu", "nvidia_vgpu",
                                 "intel_qat", "intel_x710", "inspur_nvme", "spdk", "pmem"}


def test_real_sys_does_not_crash():
    r = discover_host("n1")  # this machine's /sys: whatever is there, it must come back as a report
    assert isinstance(r, HostReport) and len(r.content_hash) == 64


def test_unknown_driver():
    with pytest.raises(UnknownDriver, match="unknown driver 'gpu9000'"):
        discover_host("n1", drivers=["gpu9000"])


def test_a_crashing_driver_is_an_error_entry(family_tree, monkeypatch):
    root = family_tree("intel_fpga")
    monkeypatch.setattr(IntelFpgaDriver, "discover", lambda self: 1 / 0)
    r = discover_host("n1", root, drivers=["intel_fpga", "fake"])
    assert [d.key for d in r.devices] == ["fake:0000:0c:00.0"]
    (err,) = r.errors
    assert err.driver == "intel_fpga" and err.message == "ZeroDivisionError: division by zero"


def test_report_round_trips_through_json_with_the_same_hash(family_tree):
    host = HostDrivers("n1", sysfs_root=family_tree("intel_fpga"), drivers=["intel_fpga", "fake"],
                       options={"fake": {"spec": "gpu:2,fpga:1x3"}})
    r = host.discover()
    again = HostReport.model_validate_json(r.model_dump_json())
    assert again == r and again.content_hash == r.content_hash
    assert [d.key for d in r.devices] == sorted(d.key for d in r.devices)


def test_models_reject_bad_names():
    with pytest.raises(ValueError, match="neither a standard nor a CUSTOM_ resource class"):
        DriverDeployable(name="x", num_accelerators=1, driver_name="d", resource_class="fpga")
    with pytest.raises(ValueError, match="neither a standard nor a CUSTOM_ trait"):
        DriverDeployable(name="x", num_accelerators=1, driver_name="d", resource_class="FPGA", traits=["CUSTOM_a-b"])
    with pytest.raises(ValueError, match="must be non-empty"):
        DriverDeployable(name="h:0000", num_accelerators=1, driver_name="d", resource_class="FPGA")
    dep = DriverDeployable(name="x", num_accelerators=1, driver_name="d", resource_class="FPGA",
                           traits=["OWNER_CYBORG", "OWNER_CYBORG"], attributes={"trait7": "stale", "phys": "p"})
    assert dep.attributes == {"phys": "p", "rc": "FPGA", "trait0": "OWNER_CYBORG"}

"""The fake driver: spec syntax, determinism, scale, simulated programming."""

from __future__ import annotations

import time

import pytest

from rayborg.drivers import ProgrammingError, discover_host
from rayborg.drivers.base import DriverContext
from rayborg.drivers.fake import FakeDriver, parse_spec


def fake(spec=None, host="h1", **options):
    return discover_host(host, drivers=["fake"], options={"fake": {"spec": spec, **options}})


def test_default_is_upstreams_fake_device():
    (dev,) = fake().devices
    assert (dev.type, dev.vendor, dev.vendor_board_info) == ("FPGA", "0xabcd", "fake_vendor_info")
    assert dev.controlpath_id.cpid_info == {"bus": "0c", "device": "00", "domain": "0000", "function": "0"}
    (dep,) = dev.deployables
    assert dep.name == "h1_FakeDevice" and dep.num_accelerators == 16 and dep.resource_class == "FPGA"
    assert dep.attributes == {"rc": "FPGA", "trait0": "CUSTOM_FAKE_DEVICE"}
    assert len(dep.attach_handles) == 16 and {h.attach_type for h in dep.attach_handles} == {"TEST_PCI"}
    assert len({h.info_json() for h in dep.attach_handles}) == 16


@pytest.mark.parametrize("spec, expected", [
    ("fpga:4,gpu:2", [("fpga", 4, 1), ("gpu", 2, 1)]),
    ("fpga:2x8, vgpu:1", [("fpga", 2, 8), ("vgpu", 1, 4)]),
    ({"qat": "3x2", "pmem": 1}, [("qat", 3, 2), ("pmem", 1, 2)]),
    ('{"nic": 2}', [("nic", 2, 1)]),
    ("ssd", [("ssd", 1, 1)]),
])
def test_parse_spec(spec, expected):
    assert parse_spec(spec) == expected


@pytest.mark.parametrize("spec, message", [("tpu:2", "unknown fake family 'tpu'"), ("fpga:two", "bad fake count")])
def test_parse_spec_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_spec(spec)


def test_families_and_counts():
    r = fake("fpga:2x3,gpu:1,vgpu:1,qat:1,nic:1,ssd:1,nvme:1,pmem:1,aichip:1")
    assert r.errors == []
    assert sorted(d.type for d in r.devices) == sorted(
        ["FPGA", "FPGA", "GPU", "GPU", "QAT", "NIC", "SSD", "NVME", "PMEM", "AICHIP"])
    rcs = {d.deployables[0].name: d.deployables[0].resource_class for d in r.devices}
    assert rcs["h1_fake_fpga_1"] == "FPGA" and rcs["h1_fake_gpu_0"] == "PGPU" and rcs["h1_fake_vgpu_0"] == "VGPU"
    assert rcs["h1_fake_qat_0"] == "CUSTOM_QAT" and rcs["h1_fake_pmem_0"] == "CUSTOM_PMEM_NAMESPACE_FAKE"
    fpga = next(d for d in r.devices if d.deployables[0].name == "h1_fake_fpga_0").deployables[0]
    assert fpga.num_accelerators == 3 and len(fpga.attach_handles) == 3
    # every handle and every device address is unique on the host
    handles = [h.info_json() for d in r.devices for dep in d.deployables for h in dep.attach_handles]
    assert len(handles) == len(set(handles))
    assert len({d.key for d in r.devices}) == len(r.devices)


def test_deterministic_and_seeded():
    assert fake("fpga:3").content_hash == fake("fpga:3").content_hash
    assert fake("fpga:3").content_hash != fake("fpga:3", host="h2").content_hash
    a, b = fake("fpga:1", seed=0), fake("fpga:1", seed=7)
    assert a.devices[0].controlpath_id.cpid_info["domain"] == "0000"
    assert b.devices[0].controlpath_id.cpid_info["domain"] == "0007"


def test_thousands_of_devices_fast():
    start = time.perf_counter()
    r = fake("fpga:3000x4,gpu:2000")
    elapsed = time.perf_counter() - start
    assert len(r.devices) == 5000 and sum(len(d.deployables[0].attach_handles) for d in r.devices) == 14000
    handles = {h.info_json() for d in r.devices for h in d.deployables[0].attach_handles}
    assert len(handles) == 14000
    assert elapsed < 5, elapsed


def test_simulated_programming():
    drv = FakeDriver(DriverContext(hostname="h1", options={"spec": "fpga:2,gpu:1", "fail_program": ["h1_fake_fpga_1"]}))
    from rayborg.drivers.bitstreams import Bitstream, BitstreamMeta
    meta = BitstreamMeta.model_validate({"bs-name": "x", "bs-uuid": "u", "vendor": "fake", "board": "b",
                                         "version": "1", "function_uuid": "aa-bb"})
    dep = drv.program("h1_fake_fpga_0", Bitstream(image_id="img-1", meta=meta, path="/dev/null"))
    assert dep.bitstream_id == "img-1" and "CUSTOM_FPGA_FUNCTION_ID_FAKE_AA_BB" in dep.traits
    assert dep.attributes["trait2"] == "CUSTOM_FPGA_FUNCTION_ID_FAKE_AA_BB"
    assert drv.program("h1_fake_fpga_0", "img-2").bitstream_id == "img-2"
    with pytest.raises(ProgrammingError, match="simulated programming failure"):
        drv.program("h1_fake_fpga_1", "img-1")
    with pytest.raises(ProgrammingError, match="a GPU cannot be programmed"):
        drv.program("h1_fake_gpu_0", "img-1")

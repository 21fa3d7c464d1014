"""Driver counters (`get_stats`), X710 DDP programming and firmware `update` on the fixture trees."""

from __future__ import annotations

import json

import pytest

from rayborg.drivers import BitstreamError, ProgrammingError, discover_host
from rayborg.drivers.base import DriverContext, HostReport, NotSupported, check_stats
from rayborg.drivers.bitstreams import LocalBitstreams
from rayborg.drivers.inspur_nvme import InspurNvmeDriver
from rayborg.drivers.intel_qat import IntelQatDriver
from rayborg.drivers.intel_x710 import IntelX710Driver
from rayborg.drivers.nvidia_gpu import NvidiaGpuDriver
from rayborg.drivers.registry import HostDrivers

PF = "0000:3b:00.0"
STATS = f"bus/pci/devices/{PF}/net/eth2/statistics"


def stats_of(report):
    return {d.key: d.stats for d in report.devices}


# ---- counters ---------------------------------------------------------------------------------


def test_x710_interface_counters_from_sysfs(family_tree):
    root = family_tree("intel_x710")
    stats = stats_of(discover_host("node1", root, drivers=["intel_x710"]))
    pf = stats[f"intel_x710:{PF}"]
    assert pf["rx_packets"] == 81234 and pf["tx_bytes"] == 81234 * 1200 and pf["rx_dropped"] == 3
    assert set(pf) == {"rx_bytes", "tx_bytes", "rx_packets", "tx_packets", "rx_errors", "tx_errors",
                       "rx_dropped", "tx_dropped", "multicast", "collisions"}
    assert stats["intel_x710:0000:3b:00.1"]["rx_packets"] == 4567
    # the spec's get_stats: device key -> counters
    assert IntelX710Driver(DriverContext("node1", root)).get_stats() == stats


def test_qat_firmware_counters_summed_over_engines_and_state(family_tree):
    stats = stats_of(discover_host("node1", family_tree("intel_qat"), drivers=["intel_qat"]))
    assert stats["intel_qat:0000:3d:00.0"] == {"fw_requests": 3500, "fw_responses": 3499, "fw_ras_events": 0,
                                               "state_up": 1}
    assert stats["intel_qat:0000:3f:00.0"]["fw_requests"] == 0


def test_qat_telemetry_device_data(family_tree, builder):
    root = family_tree("intel_qat")
    builder.write("kernel/debug/qat_c6xx_0000:3f:00.0/telemetry/device_data",
                  "sample_cnt               8\npci_trans_cnt            120\nmax_rd_lat               3\nbad line\n")
    builder.write("bus/pci/devices/0000:3f:00.0/qat/state", "down")
    pf = stats_of(discover_host("node1", root, drivers=["intel_qat"]))["intel_qat:0000:3f:00.0"]
    assert pf["tl_sample_cnt"] == 8 and pf["tl_pci_trans_cnt"] == 120 and pf["state_up"] == 0


def test_nvme_hwmon_temperature_and_smart_log_tool(family_tree, make_tool):
    root = family_tree("inspur_nvme")
    assert stats_of(discover_host("node1", root, drivers=["inspur_nvme"])) == {
        "inspur_nvme:0000:5e:00.0": {"temperature_c": 35.85}}
    smart = {"critical_warning": 0, "temperature": 310, "avail_spare": 100, "percent_used": 3,
             "data_units_read": 123456, "power_on_hours": 4242, "media_errors": 0, "unknown_thing": 7}
    tool = make_tool("nvme", f"print({json.dumps(json.dumps(smart))})")
    report = discover_host("node1", root, drivers=["inspur_nvme"],
                           options={"inspur_nvme": {"smart_log_tool": str(tool.path)}})
    stats = stats_of(report)["inspur_nvme:0000:5e:00.0"]
    assert stats["temperature_c"] == 35.85  # hwmon's reading wins over the SMART log's kelvin
    assert stats["power_on_hours"] == 4242 and stats["percent_used"] == 3 and "unknown_thing" not in stats
    assert tool.calls == [["smart-log", "/dev/nvme0", "-o", "json"]]


def test_nvme_smart_tool_failure_costs_only_the_counters(family_tree, make_tool):
    tool = make_tool("nvme", "sys.exit(1)")
    report = discover_host("node1", family_tree("inspur_nvme"), drivers=["inspur_nvme"],
                           options={"inspur_nvme": {"smart_log_tool": str(tool.path)}})
    assert report.errors == [] and len(report.devices) == 1
    assert report.devices[0].stats == {}


def test_nvidia_smi_stand_in_matched_by_bus_id(family_tree, make_tool):
    csv = ("00000000:AF:00.0, 41, 27.50, 5, 1, 300, 15360\n"
           "00000000:3B:00.0, [N/A], [N/A], 0, 0, 0, 32768\n")
    tool = make_tool("nvidia-smi", f"print({csv!r}, end='')")
    report = discover_host("node1", family_tree("nvidia_gpu"), drivers=["nvidia_gpu"],
                           options={"nvidia_gpu": {"nvidia_smi": str(tool.path)}})
    stats = stats_of(report)
    assert stats["nvidia_gpu:0000:af:00.0"] == {"temperature_c": 41, "power_w": 27.5, "utilization_gpu_pct": 5,
                                                "utilization_memory_pct": 1, "memory_used_mib": 300,
                                                "memory_total_mib": 15360}
    assert stats["nvidia_gpu:0000:3b:00.0"] == {"utilization_gpu_pct": 0, "utilization_memory_pct": 0,
                                                "memory_used_mib": 0, "memory_total_mib": 32768}
    assert len(tool.calls) == 1  # once a sweep, not once a GPU
    assert tool.calls[0][0].startswith("--query-gpu=pci.bus_id,temperature.gpu")


def test_gpu_hwmon_without_nvidia_smi(family_tree, builder):
    root = family_tree("nvidia_gpu")
    builder.write("bus/pci/devices/0000:3b:00.0/hwmon/hwmon1/temp1_input", "52000")
    assert stats_of(discover_host("node1", root, drivers=["nvidia_gpu"]))["nvidia_gpu:0000:3b:00.0"] == {
        "temperature_c": 52.0}


def test_odd_counter_files_are_skipped_and_stats_can_be_turned_off(family_tree, builder):
    root = family_tree("intel_x710")
    builder.write(f"{STATS}/rx_bytes", "lots")
    builder.unreadable(f"{STATS}/tx_bytes")
    report = discover_host("node1", root, drivers=["intel_x710"])
    pf = stats_of(report)[f"intel_x710:{PF}"]
    assert "rx_bytes" not in pf and "tx_bytes" not in pf and pf["rx_packets"] == 81234
    assert report.errors == []
    off = discover_host("node1", root, drivers=["intel_x710"], options={"intel_x710": {"stats": "false"}})
    assert all(d.stats == {} for d in off.devices)


def test_counters_moving_leave_the_content_hash_alone(family_tree, builder):
    """Placement-relevant change detection ignores counters: only the stats hash moves."""
    root = family_tree("intel_x710")
    before = discover_host("node1", root, drivers=["intel_x710"])
    builder.write(f"{STATS}/rx_packets", "99999999")
    after = discover_host("node1", root, drivers=["intel_x710"])
    assert after.devices[0].stats["rx_packets"] == 99999999
    assert after.content_hash == before.content_hash
    assert after.stats_hash() != before.stats_hash()
    # and the hash survives the trip to PlacementSync (JSON), stats included
    again = HostReport.model_validate(after.model_dump(mode="json"))
    assert again.content_hash == before.content_hash and again.devices[0].stats == after.devices[0].stats


@pytest.mark.parametrize("bad", [{"Bad-Name": 1}, {"x": "12"}, {"x": float("nan")}, {"x": True},
                                 {f"c{i}": i for i in range(33)}])
def test_check_stats_refuses_unbounded_or_odd_counters(bad):
    with pytest.raises(ValueError):
        check_stats(bad)


def test_a_driver_returning_bad_stats_keeps_its_device(family_tree, monkeypatch):
    monkeypatch.setattr(IntelQatDriver, "device_stats", lambda self, dev: {"Not OK": 1})
    report = discover_host("node1", family_tree("intel_qat"), drivers=["intel_qat"])
    assert len(report.devices) == 2 and all(d.stats == {} for d in report.devices)


# ---- X710 DDP packages through program() ----------------------------------------------------------


@pytest.fixture
def ethtool(make_tool):
    return make_tool("ethtool")


@pytest.fixture
def ddp(make_bitstream):
    return make_bitstream("ddp-gtp", "f0e1d2c3", vendor="Intel", board="X710", function_name="GTPv1",
                          region_uuid=None)


def test_x710_program_loads_the_ddp_package_on_the_pf(family_tree, ethtool, ddp):
    root = family_tree("intel_x710")
    driver = IntelX710Driver(DriverContext("node1", root, options={"ddp_tool": str(ethtool.path)}))
    bs = LocalBitstreams(ddp.parent).fetch("ddp-gtp")
    dep = driver.program("node1_0000_3b_02_0", bs)  # a VF: the package goes on its PF
    assert ethtool.calls == [["-f", "eth2", str(ddp), "100"]]
    assert dep.bitstream_id == "ddp-gtp"
    assert dep.attributes["function"] == "GTPv1" and "CUSTOM_GTPV1" in dep.traits
    pf = next(d for d in driver.discover().devices if d.key == f"intel_x710:{PF}")
    assert [d.bitstream_id for d in pf.deployables] == ["ddp-gtp", "ddp-gtp"]
    other = next(d for d in driver.discover().devices if d.key != f"intel_x710:{PF}")
    assert other.deployables[0].bitstream_id is None


def test_x710_program_refuses_a_package_for_another_board(family_tree, ethtool, make_bitstream):
    path = make_bitstream("ddp-x", "aa", vendor="Intel", board="E810", region_uuid=None)
    driver = IntelX710Driver(DriverContext("node1", family_tree("intel_x710"),
                                           options={"ddp_tool": str(ethtool.path)}))
    with pytest.raises(BitstreamError, match="board 'E810'"):
        driver.program("node1_0000_3b_00_1", LocalBitstreams(path.parent).fetch("ddp-x"))
    assert ethtool.calls == []


def test_x710_program_tool_failure_names_device_and_tool(family_tree, make_tool, ddp):
    tool = make_tool("ethtool", "sys.stderr.write('Cannot flash: Operation not supported\\n'); sys.exit(95)")
    hd = HostDrivers("node1", sysfs_root=family_tree("intel_x710"), drivers=["intel_x710"],
                     options={"intel_x710": {"ddp_tool": str(tool.path)}, "bitstreams": {"dir": str(ddp.parent)}})
    with pytest.raises(ProgrammingError, match="exit code 95.*Operation not supported"):
        hd.program("intel_x710", "node1_0000_3b_00_1", "ddp-gtp")
    assert all(d.bitstream_id is None for d in hd.discover().deployables())


# ---- firmware update ----------------------------------------------------------------------------


def test_x710_update_runs_nvmupdate_for_the_adapter(family_tree, make_tool, tmp_path):
    tool = make_tool("nvmupdate64e", "print('Update successful')")
    image = tmp_path / "nvmupdate.cfg"
    image.write_text("CONFIG VERSION: 1.20.0\n")
    hd = HostDrivers("node1", sysfs_root=family_tree("intel_x710"), drivers=["intel_x710"],
                     options={"intel_x710": {"firmware_tool": str(tool.path)}})
    assert "Update successful" in hd.update("intel_x710", PF, image)
    assert tool.calls == [["-u", "-l", "-c", str(image), "-m", "3cfdfea1b2c0"]]
    # by a deployable's name too
    hd.update("intel_x710", "node1_0000_3b_00_1", image)
    assert tool.calls[-1][-1] == "3cfdfea1b2c1"


def test_update_refusals(family_tree, make_tool, tmp_path):
    image = tmp_path / "fw.bin"
    image.write_text("x")
    qat = HostDrivers("node1", sysfs_root=family_tree("intel_qat"), drivers=["intel_qat"])
    with pytest.raises(NotSupported, match="intel_qat cannot update firmware"):
        qat.update("intel_qat", "0000:3d:00.0", image)
    with pytest.raises(BitstreamError, match="does not exist"):
        qat.update("intel_qat", "0000:3d:00.0", tmp_path / "nothing.bin")
    tool = make_tool("nvmupdate64e", "sys.exit(7)")
    hd = HostDrivers("node1", sysfs_root=family_tree("intel_x710"), drivers=["intel_x710"],
                     options={"intel_x710": {"firmware_tool": str(tool.path)}})
    with pytest.raises(ProgrammingError, match="exit code 7"):
        hd.update("intel_x710", PF, image)
    with pytest.raises(Exception, match="no device"):
        hd.update("intel_x710", "0000:99:00.0", image)


def test_default_driver_has_no_stats_and_no_update(family_tree):
    nvme = InspurNvmeDriver(DriverContext("node1", family_tree("inspur_nvme")))
    dev = nvme.discover().devices[0]
    with pytest.raises(NotSupported):
        nvme.update(dev, "/nonexistent")
    assert NvidiaGpuDriver.update is not IntelX710Driver.update

"""`rayborg firmware update DEVICE IMAGE` against a running runtime: an X710 whose driver runs a
stand-in nvmupdate64e through the host's agent; a QAT whose driver has no firmware tool; bad names;
and `rayborg devices --json` showing the devices' counters."""

import json
import stat
import sys

import pytest
import ray
from cli_helpers import cli_runtime, run
from runtime_helpers import fresh_store
from sqlmodel import select

from rayborg.actors.runtime_config import RuntimeConfig
from rayborg.cli import main
from rayborg.drivers.sysfs_tree import fixture_tree
from rayborg.store.tables import Device

pytestmark = [pytest.mark.xdist_group("ray"), pytest.mark.slow]
PF = "0000:3b:00.0"


@pytest.fixture(scope="module")
def runtime(ray_cluster, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("firmware")
    store = fresh_store(tmp)
    nic, qat = fixture_tree("intel_x710", tmp / "nic"), fixture_tree("intel_qat", tmp / "qat")
    tool, record = tmp / "nvmupdate64e", tmp / "nvmupdate64e.calls"
    tool.write_text(f"#!{sys.executable}\nimport json, sys\n"
                    f"open({str(record)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
                    "if 'broken' in sys.argv[4]:\n    sys.stderr.write('NVM image is corrupt\\n'); sys.exit(5)\n"
                    "print('Update successful')\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    config = RuntimeConfig(
        database_url=store.url, report_interval=30, retry_interval=0.2,
        host_overrides={"host-a": {"drivers": ["intel_x710"], "sysfs_root": str(nic),
                                   "driver_options": {"intel_x710": {"firmware_tool": str(tool)}}},
                        "host-b": {"drivers": ["intel_qat"], "sysfs_root": str(qat)},
                        "host-c": {"drivers": []}})
    image = tmp / "nvmupdate.cfg"
    image.write_text("CONFIG VERSION: 1.20.0\n")
    broken = tmp / "broken.cfg"
    broken.write_text("x\n")
    with cli_runtime(store, config, deployables=6):
        yield {"store": store, "record": record, "image": str(image), "broken": str(broken)}


def device_uuid(store, key):
    return store.query(lambda s: s.exec(select(Device.uuid).where(Device.std_board_info_key == key)).one())


def calls(record) -> list[list[str]]:
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


def test_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["firmware", "update", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "DEVICE" in text and "IMAGE" in text and "--json" in text and "nvmupdate.cfg" in text


def test_update_by_device_uuid_and_by_deployable(runtime, capsys):
    uuid = device_uuid(runtime["store"], f"intel_x710:{PF}")
    code, out, err = run(capsys, "firmware", "update", uuid, runtime["image"], "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["ok"] and result["host"] == "host-a" and result["device_uuid"] == uuid
    assert "Update successful" in result["output"]
    assert calls(runtime["record"])[-1] == ["-u", "-l", "-c", runtime["image"], "-m", "3cfdfea1b2c0"]
    code, out, _ = run(capsys, "firmware", "update", "host-a_0000_3b_00_1", runtime["image"])
    assert code == 0 and "updated" in out
    assert calls(runtime["record"])[-1][-1] == "3cfdfea1b2c1"


def test_failures_are_one_line_and_exit_1(runtime, capsys):
    uuid = device_uuid(runtime["store"], f"intel_x710:{PF}")
    code, out, err = run(capsys, "firmware", "update", uuid, runtime["broken"])
    assert code == 1 and "failed" in out
    assert "exit code 5" in err and "NVM image is corrupt" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "firmware", "update", uuid, "/nonexistent/fw.cfg")
    assert code == 1 and "does not exist" in err
    qat = device_uuid(runtime["store"], "intel_qat:0000:3d:00.0")
    code, _, err = run(capsys, "firmware", "update", qat, runtime["image"])
    assert code == 1 and "intel_qat cannot update firmware" in err
    code, _, err = run(capsys, "firmware", "update", "no-such-device", runtime["image"])
    assert code == 1 and "no device or deployable 'no-such-device'" in err


def test_devices_json_shows_counters(runtime, capsys):
    code, out, _ = run(capsys, "devices", "--json")
    assert code == 0
    rows = {r["deployable"]: r for r in json.loads(out)}
    assert rows["host-a_0000_3b_00_1"]["stats"]["rx_packets"] == 4567
    assert rows["host-b_0000_3d_01_0"]["stats"]["fw_requests"] == 3500


def test_the_python_api_updates_firmware(runtime):
    import rayborg

    rb = rayborg.connect(ray.get_runtime_context().gcs_address, database_url=runtime["store"].url)
    uuid = device_uuid(runtime["store"], f"intel_x710:{PF}")
    result = rb.update_firmware(uuid, runtime["image"])
    assert result["ok"] and result["device_uuid"] == uuid and result["driver"] == "intel_x710"
    assert calls(runtime["record"])[-1][:4] == ["-u", "-l", "-c", runtime["image"]]
    with pytest.raises(rayborg.RayborgError, match="no device or deployable"):
        rb.update_firmware("no-such-device", runtime["image"])

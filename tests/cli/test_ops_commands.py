"""`rayborg status|devices|arqs|program|enable|disable` against a running runtime on the 3-host
test cluster: tables, --json, exit codes, one-line errors, --help."""

import json
import os
import random
import subprocess
import sys

import pytest
from cli_helpers import cli_runtime, run
from factories import add_profile
from runtime_helpers import fresh_store

from rayborg.actors.runtime_config import RuntimeConfig
from rayborg.cli import main

pytestmark = [pytest.mark.xdist_group("ray"), pytest.mark.slow]
COMMANDS = ["status", "devices", "arqs", "program", "enable", "disable"]
BITSTREAM = "0e6f4c8a-5b2d-4f3e-9a1c-7d8e9f0a1b2c"


@pytest.fixture(scope="module")
def runtime(ray_cluster, tmp_path_factory):
    store = fresh_store(tmp_path_factory.mktemp("cli"))
    seed = random.randrange(1, 3000)
    config = RuntimeConfig(
        database_url=store.url,
        report_interval=30,
        retry_interval=0.2,
        host_overrides={
            "host-a": {
                "fake_devices": "fpga:4",
                "driver_options": {
                    "fake": {"seed": seed, "program_seconds": 0.05, "fail_program": ["host-a_fake_fpga_3"]}
                },
            },
            "host-b": {"fake_devices": "gpu:2", "driver_options": {"fake": {"seed": seed + 5}}},
            "host-c": {"drivers": []},
        },
    )
    with cli_runtime(store, config, deployables=6):  # and the lease held, as `rayborg serve` does
        add_profile(store, "cli-gpu", [{"resources:PGPU": "1"}])
        yield {"store": store, "address": ray_cluster["cluster"].address}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_explains_itself(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "--json" in text and "--address" in text and "--database-url" in text and len(text) > 300


def test_status_table_and_json(runtime, capsys):
    code, out, _ = run(capsys, "status")
    assert code == 0
    assert "Ray cluster" in out and "host-a" in out and "FPGA" in out and "Placement sync:" in out
    code, out, _ = run(capsys, "status", "--json")
    st = json.loads(out)
    assert st["devices"]["FPGA"] == {"enabled": 4, "total": 4} and st["devices"]["GPU"]["total"] == 2
    assert {h["hostname"] for h in st["hosts"]} >= {"host-a", "host-b", "host-c"}
    assert st["cluster"]["nodes"] >= 3 and "rayborg:placement-sync" in st["actors"]
    assert st["placement_sync"]["lag_s"] is not None


def test_devices_and_arqs(runtime, capsys):
    code, out, _ = run(capsys, "devices", "--family", "GPU", "--json")
    rows = json.loads(out)
    assert code == 0 and [r["host"] for r in rows] == ["host-b", "host-b"]
    code, out, _ = run(capsys, "devices", "--host", "host-a")
    assert code == 0 and "host-a_fake_fpga_0" in out and "4 deployables" in out
    import rayborg

    with rayborg.connect().claim("cli-gpu") as claim:
        code, out, _ = run(capsys, "arqs", "--state", "Bound", "--json")
        assert [a["uuid"] for a in json.loads(out)] == claim.arqs and json.loads(out)[0]["claim"]
        code, out, _ = run(capsys, "devices", "--state", "bound", "--json")
        assert [r["deployable"] for r in json.loads(out)] == [claim.devices[0]["deployable"]]
    code, out, _ = run(capsys, "arqs")
    assert code == 0 and "0 ARQs" in out


def test_program_exit_codes_and_results(runtime, capsys):
    code, out, err = run(capsys, "program", "--bitstream", BITSTREAM, "--where", "host=host-a", "--json")
    body = json.loads(out)
    assert code == 1 and body["counts"] == {"ok": 3, "failed": 1} and not body["interrupted"]
    assert [r["deployable"] for r in body["results"] if r["status"] == "failed"] == ["host-a_fake_fpga_3"]
    code, out, err = run(capsys, "program", "--bitstream", BITSTREAM, "--where", "name=host-a_fake_fpga_0")
    assert code == 0 and "1 devices" in out and "1 ok" in out
    code, out, err = run(capsys, "program", "--bitstream", BITSTREAM, "--where", "host=nowhere")
    assert code == 1 and err.strip() == "rayborg program: selector 'host=nowhere' matched no deployables"
    code, out, err = run(capsys, "program", "--bitstream", BITSTREAM, "--where", "colour=red")
    assert code == 1 and err.count("\n") == 1 and "unknown selector key 'colour'" in err


def test_enable_disable(runtime, capsys):
    code, out, _ = run(capsys, "disable", "host-b_fake_gpu_0")
    assert code == 0 and "maintaining" in out
    code, out, _ = run(capsys, "devices", "--state", "disabled", "--json")
    assert [r["deployable"] for r in json.loads(out)] == ["host-b_fake_gpu_0"]
    code, out, _ = run(capsys, "enable", "host-b_fake_gpu_0", "--json")
    assert code == 0 and json.loads(out)["status"] == "enabled" and json.loads(out)["changed"]
    code, out, err = run(capsys, "enable", "no-such-device")
    assert code == 1 and err.strip() == "rayborg enable: no device or deployable named 'no-such-device'"


def test_the_daemon_of_another_database_is_never_used_by_default(runtime, capsys, tmp_path, monkeypatch):
    """Settings that name another database find no daemon of their own here (Ray is joined and
    this runtime's daemon runs): they say so, and act on nothing."""
    import rayborg

    other = f"sqlite:///{tmp_path / 'mine.db'}"
    monkeypatch.setenv("RAYBORG_DATABASE_URL", other)
    for argv in (["status"], ["disable", "host-b_fake_gpu_1"]):
        code, out, err = run(capsys, *argv)
        assert code == 1 and out == ""
        assert err.startswith(f"rayborg {argv[0]}: no rayborg daemon runs for database {other} ")
    with pytest.raises(rayborg.RayborgError, match="no rayborg daemon runs for database"):
        rayborg.connect()
    code, out, _ = run(capsys, "devices", "--state", "disabled", "--json",
                       "--database-url", runtime["store"].url)
    assert code == 0 and json.loads(out) == []


def test_a_cluster_whose_daemon_uses_another_database_is_refused(runtime, capsys, tmp_path):
    other = f"sqlite:///{tmp_path / 'other.db'}"
    code, out, err = run(capsys, "disable", "host-b_fake_gpu_1", "--address", runtime["address"],
                         "--database-url", other)
    assert code == 1 and out == "" and err.count("\n") == 1
    assert (f"rayborg disable: the rayborg on the Ray cluster at {runtime['address']} uses database "
            f"{runtime['store'].url}, not {other} (the database of these settings)") in err
    code, out, _ = run(capsys, "devices", "--state", "disabled", "--json")
    assert code == 0 and json.loads(out) == []  # nothing was done to the other daemon's device


def test_a_real_process_joins_the_cluster(runtime):
    """Without --address, a command finds the cluster through the daemon's lease in its database."""
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    out = subprocess.run(
        [sys.executable, "-m", "rayborg", "devices", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert len(json.loads(out.stdout)) == 6
    out = subprocess.run(
        [sys.executable, "-m", "rayborg", "status", "--address", "127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode == 1 and out.stderr.startswith("rayborg status: no Ray cluster at 127.0.0.1:1")
    assert "Traceback" not in out.stderr

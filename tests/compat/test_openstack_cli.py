"""The `openstack accelerator ...` CLI (python-openstackclient + python-cyborgclient), unmodified, as a
subprocess against a running `rayborg serve`, without Keystone. Each invocation costs ~1 s: the
commands are few, and independent ones run concurrently."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow]


def openstack_bin() -> str:
    beside = Path(sys.executable).parent / "openstack"
    found = str(beside) if beside.exists() else shutil.which("openstack")
    if found is None:
        pytest.fail("the openstack CLI is not installed (python-openstackclient is a test dependency)")
    return found


class CLI:
    def __init__(self, url: str):
        self.base = [openstack_bin(), "--os-auth-type", "none", "--os-endpoint", f"{url}/v2"]

    def run(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([*self.base, *args], check=False, capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)
        if ok:
            assert proc.returncode == 0, f"openstack {' '.join(args)}: {proc.stderr}"
        return proc

    def json(self, *args: str):
        return json.loads(self.run(*args, "-f", "json").stdout)

    def concurrently(self, *commands: tuple[str, ...]) -> list:
        with ThreadPoolExecutor(len(commands)) as pool:
            return list(pool.map(lambda c: self.json(*c), commands))


def test_cli_inventory_profiles_and_arqs(served):
    cli = CLI(served.url)
    devices, deployables, created = cli.concurrently(
        ("accelerator", "device", "list"), ("accelerator", "deployable", "list"),
        ("accelerator", "device", "profile", "create", "cli-dp", "--group",
         "resources:FPGA=1,trait:CUSTOM_FPGA_INTEL=required", "--description", "from the cli"))
    assert {d["uuid"]: d["type"] for d in devices} == {served.tree.device_uuid: "FPGA",
                                                       served.gpu.device_uuid: "GPU"}
    assert json.loads(next(d for d in devices if d["type"] == "FPGA")["std_board_info"])["class"] == "0x120000"
    assert {d["uuid"] for d in deployables} == set(served.tree.deployable_uuids + served.gpu.deployable_uuids)
    groups = [{"resources:FPGA": "1", "trait:CUSTOM_FPGA_INTEL": "required"}]
    assert created["name"] == "cli-dp" and created["groups"] == groups
    assert created["description"] == "from the cli"

    listed, shown, by_name, arq = cli.concurrently(
        ("accelerator", "device", "profile", "list"),
        ("accelerator", "device", "profile", "show", created["uuid"]),
        ("--os-accelerator-api-version", "2.2", "accelerator", "device", "profile", "show", "cli-dp"),
        ("accelerator", "arq", "create", "cli-dp"))
    assert {p["name"]: p["groups"] for p in listed}["cli-dp"] == groups
    assert shown["uuid"] == by_name["uuid"] == created["uuid"] and shown["groups"] == groups
    assert arq["state"] == "Initial" and arq["device_profile_name"] == "cli-dp"
    assert arq["attach_handle_info"] == {} and arq["instance_uuid"] is None

    arqs, arq_shown = cli.concurrently(("accelerator", "arq", "list"), ("accelerator", "arq", "show", arq["uuid"]))
    assert arq["uuid"] in {a["uuid"] for a in arqs}
    assert arq_shown["uuid"] == arq["uuid"] and arq_shown["state"] == "Initial"

    cli.run("accelerator", "arq", "delete", arq["uuid"])
    cli.run("accelerator", "device", "profile", "delete", "cli-dp")
    gone = cli.run("accelerator", "device", "profile", "delete", "cli-dp", ok=False)
    assert gone.returncode == 1 and "not found" in gone.stderr.lower()
    remaining = cli.concurrently(("accelerator", "arq", "list"), ("accelerator", "device", "profile", "list"))
    assert arq["uuid"] not in {a["uuid"] for a in remaining[0]}
    assert "cli-dp" not in {p["name"] for p in remaining[1]}


def test_cli_shows_cyborg_error_messages(served):
    """A refused request prints the server's faultstring (the envelope decodes), and exits 1."""
    cli = CLI(served.url)
    bad = cli.run("accelerator", "device", "profile", "create", "bad name!", "--group", "resources:FPGA=1",
                  ok=False)
    assert bad.returncode == 1 and "BadRequest" in bad.stderr and "name" in bad.stderr
    missing = cli.run("accelerator", "arq", "create", "no-such-profile", ok=False)
    assert missing.returncode == 1 and "no-such-profile" in missing.stderr

"""`rayborg discover`: table and JSON output on fixture trees and on this machine's real /sys."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from rayborg.commands import discover
from rayborg.drivers import REAL_DRIVERS, discover_host, driver_class
from rayborg.drivers.base import DriverContext, DriverFailure
from rayborg.drivers.pci import PciDriver, scan_pci
from rayborg.drivers.spdk import DEFAULT_SOCKET
from rayborg.drivers.sysfs_tree import FIXTURE_TREES, fixture_tree, fixture_tree_drivers


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="rayborg")
    discover.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["discover", *argv])
    return args.func(args)


def test_json_on_fixture_tree(family_tree, capsys):
    root = family_tree("intel_fpga")
    assert run("--sysfs-root", str(root), "--hostname", "n1", "--drivers", "intel_fpga", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["hostname"] == "n1" and out["drivers"] == ["intel_fpga"] and out["errors"] == []
    assert [d["key"] for d in out["devices"]] == ["intel_fpga:0000:5e:00.0", "intel_fpga:0000:be:00.0"]
    assert len(out["content_hash"]) == 64


def test_table_on_fixture_tree(family_tree, capsys):
    root = family_tree("intel_fpga")
    root.joinpath("devices/pci0000:be/0000:be:00.0/driver").unlink()
    assert run("--sysfs-root", str(root), "--hostname", "n1", "--drivers", "intel_fpga") == 0
    out = capsys.readouterr().out
    assert "n1_0000_5e_00_0" in out and "PAC_ARRIA10" in out
    assert "1 error(s)" in out and "no kernel driver" in out


def test_fake_flag_adds_fake_driver(tmp_path, capsys):
    assert run("--sysfs-root", str(tmp_path), "--hostname", "n1", "--fake", "fpga:2,gpu:1", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert "fake" in out["drivers"] and len(out["devices"]) == 3


@pytest.mark.parametrize("argv, message", [
    (["--drivers", "intel_fpga,warp_drive"], "unknown driver 'warp_drive'"),
    (["--fake", "tpu:1"], "unknown fake family 'tpu'"),
])
def test_bad_names_exit_2_with_one_line(argv, message, capsys):
    assert run(*argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def claimed(sysfs_root: Path) -> list[str]:
    """`<driver>:<address>` for every PCI function some real driver's own `matches` takes."""
    funcs, _ = scan_pci(sysfs_root)
    drivers = [driver_class(n)(DriverContext(sysfs_root=sysfs_root)) for n in REAL_DRIVERS]
    out = []
    for drv in (d for d in drivers if isinstance(d, PciDriver)):
        for fn in funcs:
            try:
                if drv.matches(fn):
                    out.append(f"{drv.NAME}:{fn.name}")
            except DriverFailure:  # could not even tell: count it as an accelerator, be lenient
                out.append(f"{drv.NAME}:{fn.name}")
    return sorted(out)


PCI_DRIVERS = {n for n in REAL_DRIVERS if issubclass(driver_class(n), PciDriver)}


def test_claimed_finds_the_accelerators_of_every_fixture_tree(tmp_path):
    # `claimed` is what decides the real-/sys test below: it must see accelerators where there are some
    families = fixture_tree_drivers()
    pci_families = [f for f in families if f in PCI_DRIVERS]
    assert len(pci_families) == len(PCI_DRIVERS)
    for fam in families:
        root = fixture_tree(fam, tmp_path / fam)
        reported = [d.key for d in discover_host("n1", root).devices if d.key.split(":")[0] in PCI_DRIVERS]
        assert claimed(root) == reported, fam
        assert reported or fam not in PCI_DRIVERS, fam


def test_real_sys_gives_an_empty_report(capsys):
    assert run("--json") == 0  # as an operator types it (settings may pick the root and drivers)
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"hostname", "drivers", "devices", "errors", "content_hash"}
    assert "fake" not in out["drivers"]
    assert run("--json", "--sysfs-root", "/sys", "--drivers", ",".join(REAL_DRIVERS)) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["drivers"] == sorted(REAL_DRIVERS)
    found = claimed(Path("/sys"))
    others = any(Path("/sys/bus/nd/devices").glob("namespace*")) or Path(DEFAULT_SOCKET).exists()
    if not found and not others:  # no accelerator here (this machine): nothing to report, nothing wrong
        assert out["errors"] == [] and out["devices"] == []
    else:  # a host with accelerators: what PCI drivers report or refuse is one of them, nothing else
        pci = PCI_DRIVERS | {"sysfs"}  # a sysfs entry is never one of them: it fails the check
        named = {d["key"] for d in out["devices"] if d["key"].split(":")[0] in pci}
        named |= {f"{e['driver']}:{e['device']}" for e in out["errors"] if e["driver"] in pci}
        assert named <= set(found), (named, found)


def test_checked_in_description_is_expanded(capsys):
    assert run("--sysfs-root", str(FIXTURE_TREES / "xilinx_fpga"), "--hostname", "n1", "--drivers", "xilinx_fpga",
               "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert [d["key"] for d in out["devices"]] == ["xilinx_fpga:0000:3b:00.0"] and out["errors"] == []


def test_through_the_rayborg_entry_point(capsys):
    from rayborg.cli import main

    assert main(["discover", "--json", "--drivers", "intel_fpga,intel_qat"]) == 0
    assert json.loads(capsys.readouterr().out)["drivers"] == ["intel_fpga", "intel_qat"]


def test_help_lists_drivers(capsys):
    with pytest.raises(SystemExit):
        run("--help")
    out = capsys.readouterr().out
    assert "--sysfs-root" in out and "inspur_nvme" in out and "fpga:4,gpu:2" in out


def vgpu_types(out: dict) -> dict[str, tuple[str, int]]:
    return {d["key"]: (d["deployables"][0]["attributes"].get("vgpu_type", "-"), d["deployables"][0]["num_accelerators"])
            for d in out["devices"]}


def test_driver_options_change_the_report(family_tree, capsys):
    root = family_tree("nvidia_vgpu")
    base = ("--sysfs-root", str(root), "--hostname", "n1", "--drivers", "nvidia_vgpu,nvidia_gpu", "--json")
    assert run(*base) == 0
    assert vgpu_types(json.loads(capsys.readouterr().out)) == {
        "nvidia_vgpu:0000:86:00.0": ("nvidia-223", 8), "nvidia_vgpu:0000:af:00.0": ("nvidia-223", 8)}
    assert run(*base, "--driver-option", "nvidia_vgpu.enabled_vgpu_types=nvidia-222",
               "--driver-option", 'nvidia_vgpu.device_addresses={"nvidia-222": ["0000:af:00.0"]}') == 0
    out = json.loads(capsys.readouterr().out)
    assert out["errors"] == []
    assert vgpu_types(out) == {"nvidia_gpu:0000:86:00.0": ("-", 1), "nvidia_vgpu:0000:af:00.0": ("nvidia-222", 16)}


CONFIG = """
[rayborg]
sysfs_root = "{root}"
enabled_drivers = ["nvidia_vgpu"]

[rayborg.driver_options.nvidia_vgpu]
enabled_vgpu_types = "nvidia-222"
device_addresses = {{"nvidia-222" = "0000:af:00.0"}}
"""


def test_config_file_roots_drivers_and_options(family_tree, tmp_path, monkeypatch, capsys):
    from rayborg.cli import main

    root = family_tree("nvidia_vgpu")
    config = tmp_path / "rayborg.toml"
    config.write_text(CONFIG.format(root=root))
    monkeypatch.setenv("RAYBORG_CONFIG", "unset")  # restored after the test: --config sets it
    assert main(["--config", str(config), "discover", "--hostname", "n1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["drivers"] == ["nvidia_vgpu"] and out["errors"] == []
    assert vgpu_types(out) == {"nvidia_vgpu:0000:af:00.0": ("nvidia-222", 16)}
    # a flag overrides one key of the file's options
    assert main(["--config", str(config), "discover", "--json", "--driver-option",
                 "nvidia_vgpu.device_addresses={\"nvidia-222\": \"0000:86:00.0\"}"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [e["message"] for e in out["errors"]] == ["vGPU type 'nvidia-222' is not supported by this GPU "
                                                     "(supported: nvidia-223)"]


@pytest.mark.parametrize("argv, message", [
    (["--sysfs-root", "/nonexistent/sys"], "sysfs root /nonexistent/sys does not exist"),
    (["--sysfs-root", __file__], f"sysfs root {__file__} is neither a directory nor a .json tree description"),
    (["--driver-option", "nvidia_vgpu"], "--driver-option 'nvidia_vgpu': want DRIVER.KEY=VALUE"),
    (["--driver-option", "nvidia_vgpu.=3"], "want DRIVER.KEY=VALUE"),
    (["--driver-option", "warp_drive.speed=9"], "driver_options for unknown driver 'warp_drive'"),
])
def test_bad_roots_and_options_exit_2_with_one_line(argv, message, capsys):
    assert run(*argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and message in captured.err and captured.err.count("\n") == 1

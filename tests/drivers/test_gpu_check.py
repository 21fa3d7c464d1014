"""`rayborg discover --compare-nvidia-smi`: the GPU drivers checked against a stand-in nvidia-smi, and
the capture (`--out`) proven to be a usable fixture. Runs without a GPU; the real check is run on a
GPU host (README: "Checking the GPU drivers on a GPU host")."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rayborg.commands import discover
from rayborg.commands.discover.gpu_check import anonymise_xml, bus_id, model_fits, parse_nvidia_smi, pci_ids
from rayborg.drivers.sysfs_tree import SysfsBuilder

H200 = {"device": "0x2335", "product": "NVIDIA H200", "subsystem": "18B010DE"}
# two H200 SXMs on an HGX board: one GPU per NUMA node, an NVSwitch (NVIDIA, not a GPU) and a NIC
# (not NVIDIA) beside them
GPUS = {"0000:17:00.0": H200 | {"numa": 0, "serial": "1654923005123",
                                "uuid": "GPU-3f2a8e1c-5b7d-4e0f-9a1b-2c3d4e5f6a7b"},
        "0000:9a:00.0": H200 | {"numa": 1, "serial": "1654923005456",
                                "uuid": "GPU-8c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f"}}


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="rayborg")
    discover.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["discover", *argv])
    return args.func(args)


def hgx(builder: SysfsBuilder) -> Path:
    for group, (address, gpu) in enumerate(GPUS.items(), start=30):
        builder.pci(address, vendor="0x10de", device=gpu["device"], cls="0x030200", driver="nvidia",
                    numa_node=gpu["numa"], iommu_group=group, subsystem_vendor="0x10de", subsystem_device="0x18b0")
    builder.pci("0000:05:00.0", vendor="0x10de", device="0x22a3", cls="0x068000", numa_node=0)  # NVSwitch
    builder.pci("0000:18:00.0", vendor="0x15b3", device="0x1021", cls="0x020000", driver="mlx5_core")
    return builder.root


def smi_xml(gpus: dict[str, dict]) -> str:
    """What `nvidia-smi -q -x` prints (R550 on an HGX H200), cut down to the elements around ours."""
    body = "".join(f"""\
	<gpu id="{'0000' + a[:4].upper() + a[4:].upper()}">
		<product_name>{g['product']}</product_name>
		<product_brand>NVIDIA</product_brand>
		<product_architecture>Hopper</product_architecture>
		<display_mode>Disabled</display_mode>
		<persistence_mode>Enabled</persistence_mode>
		<addressing_mode>None</addressing_mode>
		<mig_mode>
			<current_mig>{g.get('mig', 'Disabled')}</current_mig>
			<pending_mig>Disabled</pending_mig>
		</mig_mode>
		<mig_devices>
			None
		</mig_devices>
		<serial>{g.get('serial', 'N/A')}</serial>
		<uuid>{g.get('uuid', 'N/A')}</uuid>
		<minor_number>{i}</minor_number>
		<vbios_version>96.00.74.00.1C</vbios_version>
		<gpu_module_id>{i + 1}</gpu_module_id>
		<gpu_virtualization_mode>
			<virtualization_mode>{g.get('virtualization', 'None')}</virtualization_mode>
			<host_vgpu_mode>N/A</host_vgpu_mode>
		</gpu_virtualization_mode>
		<pci>
			<pci_bus>{a[5:7].upper()}</pci_bus>
			<pci_device>00</pci_device>
			<pci_domain>0000</pci_domain>
			<pci_device_id>{g['device'][2:].upper()}10DE</pci_device_id>
			<pci_bus_id>{'0000' + a[:4].upper() + a[4:].upper()}</pci_bus_id>
			<pci_sub_system_id>{g.get('subsystem', 'N/A')}</pci_sub_system_id>
			<pci_gpu_link_info>
				<pcie_gen>
					<max_link_gen>5</max_link_gen>
					<current_link_gen>5</current_link_gen>
				</pcie_gen>
			</pci_gpu_link_info>
		</pci>
		<processes>
			<process_info>
				<pid>4242</pid>
				<process_name>/home/alice/train.py</process_name>
			</process_info>
		</processes>
	</gpu>
""" for i, (a, g) in enumerate(gpus.items()))
    return f"""<?xml version="1.0" ?>
<!DOCTYPE nvidia_smi_log SYSTEM "nvsmi_device_v12.dtd">
<nvidia_smi_log>
	<timestamp>Tue Jun  3 10:00:00 2025</timestamp>
	<driver_version>550.90.07</driver_version>
	<cuda_version>12.4</cuda_version>
	<attached_gpus>{len(gpus)}</attached_gpus>
{body}</nvidia_smi_log>
"""


@pytest.fixture
def nvidia_smi(make_tool, tmp_path):
    """A stand-in nvidia-smi printing smi_xml(gpus); returns its path."""
    def make(gpus: dict[str, dict], *, rc: int = 0, said: str = ""):
        log = tmp_path / "nvidia-smi.log.xml"
        log.write_text(smi_xml(gpus))
        tool = make_tool("nvidia-smi", f"print({said!r}) if {rc} else sys.stdout.write(open({str(log)!r}).read())\n"
                                        f"sys.exit({rc})")
        return tool
    return make


def compare_json(root: Path, tool, *extra: str, capsys) -> tuple[int, dict]:
    rc = run("--sysfs-root", str(root), "--compare-nvidia-smi", "--nvidia-smi", str(tool.path), "--json", *extra)
    return rc, json.loads(capsys.readouterr().out)


def test_agreement_exits_0(builder, nvidia_smi, capsys):
    tool = nvidia_smi(GPUS)
    rc, out = compare_json(hgx(builder), tool, capsys=capsys)
    assert rc == 0 and tool.calls == [["-q", "-x"]]
    assert out["agree"] and out["differences"] == [] and out["report"]["drivers"] == ["nvidia_gpu", "nvidia_vgpu"]
    assert [(g["address"], g["key"], g["status"]) for g in out["gpus"]] == [
        ("0000:17:00.0", "nvidia_gpu:0000:17:00.0", "match"), ("0000:9a:00.0", "nvidia_gpu:0000:9a:00.0", "match")]
    fields = {f["field"]: (f["report"], f["nvidia_smi"], f["ok"]) for f in out["gpus"][1]["fields"]}
    assert fields == {"vendor_id": ("0x10de", "0x10de", True), "device_id": ("0x2335", "0x2335", True),
                      "subsystem": ("0x10de:0x18b0", "0x10de:0x18b0", True),
                      "model": ("H200-SXM-141GB", "NVIDIA H200", True), "mig_mode": ("", "Disabled", None),
                      "virtualization": ("", "None", None)}
    # the table, as an operator reads it
    assert run("--sysfs-root", str(builder.root), "--compare-nvidia-smi", "--nvidia-smi", str(tool.path)) == 0
    table = capsys.readouterr().out
    assert "0000:9a:00.0  vendor_id" in table and "H200-SXM-141GB" in table
    assert table.rstrip().endswith("AGREE: 2 GPU(s), same addresses, ids and models")


def test_existing_fixture_tree_agrees_with_its_product_names(family_tree, nvidia_smi, capsys):
    # drivers/fixture_trees/nvidia_gpu: a T4 bound to vfio-pci, an unbound V100 (no subsystem ids)
    tool = nvidia_smi({"0000:3b:00.0": {"device": "0x1db6", "product": "Tesla V100-PCIE-32GB"},
                       "0000:af:00.0": {"device": "0x1eb8", "product": "Tesla T4", "subsystem": "12A210DE"}})
    rc, out = compare_json(family_tree("nvidia_gpu"), tool, capsys=capsys)
    assert rc == 0 and [g["status"] for g in out["gpus"]] == ["match", "match"]
    assert "subsystem" not in {f["field"] for f in out["gpus"][0]["fields"]}  # only one side has it


def test_gpu_missing_from_sysfs_exits_1_naming_it(builder, nvidia_smi, capsys):
    tool = nvidia_smi(GPUS | {"0000:bd:00.0": H200})
    assert run("--sysfs-root", str(hgx(builder)), "--compare-nvidia-smi", "--nvidia-smi", str(tool.path)) == 1
    out = capsys.readouterr().out
    assert "DIFFER: 1 difference(s)" in out
    assert ("0000:bd:00.0: NVIDIA H200 (0x2335) is listed by nvidia-smi but missing from the report") in out
    assert "note 0000:bd:00.0: sysfs has no bus/pci/devices/0000:bd:00.0" in out


def test_gpu_in_sysfs_but_unclaimed_is_described(builder, nvidia_smi, capsys):
    builder.pci("0000:17:00.0", vendor="0x10de", device="0x2335", cls="0x030200", driver="nvidia")
    builder.mdev_types("0000:17:00.0", {"nvidia-1": {}})  # a vGPU: not nvidia_gpu's
    rc, out = compare_json(builder.root, nvidia_smi({"0000:17:00.0": H200}), "--drivers", "nvidia_gpu",
                           capsys=capsys)
    assert rc == 1 and out["gpus"][0]["notes"] == [
        "sysfs: vendor 0x10de, device 0x2335, class 0x030200, driver nvidia, has mdev_supported_types"]


def test_gpu_the_driver_could_not_read_is_missing_with_its_error(builder, nvidia_smi, capsys):
    root = hgx(builder)
    builder.write("devices/pci0000:9a/0000:9a:00.0/numa_node", "banana")
    rc, out = compare_json(root, nvidia_smi(GPUS), capsys=capsys)
    assert rc == 1 and out["differences"] == [
        "0000:9a:00.0: NVIDIA H200 (0x2335) is listed by nvidia-smi but missing from the report (report errors: "
        f"nvidia_gpu: non-numeric value 'banana' ({root}/bus/pci/devices/0000:9a:00.0/numa_node))"]


def test_wrong_device_id_is_a_difference(builder, nvidia_smi, capsys):
    tool = nvidia_smi(GPUS | {"0000:9a:00.0": GPUS["0000:9a:00.0"] | {"device": "0x2336"}})
    rc, out = compare_json(hgx(builder), tool, capsys=capsys)
    assert rc == 1 and out["differences"] == ["0000:9a:00.0: device_id '0x2335' != nvidia-smi '0x2336'"]
    assert [g["status"] for g in out["gpus"]] == ["match", "differs"]


def test_gpu_nvidia_smi_does_not_list_is_extra(builder, nvidia_smi, capsys):
    rc, out = compare_json(hgx(builder), nvidia_smi({"0000:17:00.0": GPUS["0000:17:00.0"]}), capsys=capsys)
    assert rc == 1 and out["differences"] == [
        "0000:9a:00.0: reported as nvidia_gpu:0000:9a:00.0 (H200-SXM-141GB) but not listed by nvidia-smi"]


def test_model_inconsistent_with_product_name(builder, nvidia_smi, capsys):
    builder.pci("0000:17:00.0", vendor="0x10de", device="0x2b85", cls="0x030200", driver="nvidia")  # not in MODELS
    builder.pci("0000:9a:00.0", vendor="0x10de", device="0x2335", cls="0x030200", driver="nvidia")
    tool = nvidia_smi({"0000:17:00.0": {"device": "0x2b85", "product": "NVIDIA B200"},
                       "0000:9a:00.0": {"device": "0x2335", "product": "NVIDIA H100 80GB HBM3"}})
    rc, out = compare_json(builder.root, tool, capsys=capsys)
    assert rc == 1 and out["differences"] == [
        "0000:17:00.0: model '0x2b85' != nvidia-smi 'NVIDIA B200'",
        "0000:9a:00.0: model 'H200-SXM-141GB' != nvidia-smi 'NVIDIA H100 80GB HBM3'"]
    assert out["gpus"][0]["notes"] == ["model is the bare device id: 0x2b85 is missing from the driver's MODELS table"]


@pytest.mark.parametrize("how", ["--nvidia-smi", "PATH"])
def test_missing_nvidia_smi_exits_2_with_one_line(builder, tmp_path, monkeypatch, capsys, how):
    if how == "PATH":
        monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
        argv = ()
    else:
        argv = ("--nvidia-smi", str(tmp_path / "no" / "nvidia-smi"))
    assert run("--sysfs-root", str(hgx(builder)), "--compare-nvidia-smi", *argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("rayborg discover: nvidia-smi not found: no executable ")
    assert ("on PATH" in captured.err) == (how == "PATH")


def test_failing_nvidia_smi_exits_2_and_still_captures(builder, nvidia_smi, tmp_path, capsys):
    said = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."
    tool = nvidia_smi(GPUS, rc=9, said=said)
    out = tmp_path / "out"
    assert run("--sysfs-root", str(hgx(builder)), "--compare-nvidia-smi", "--nvidia-smi", str(tool.path),
               "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert err == f"rayborg discover: {tool.path} -q -x failed (exit code 9): {said}\n"
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "sysfs", "tree.json"]


def test_garbled_log_exits_2(builder, make_tool, tmp_path, capsys):
    tool = make_tool("nvidia-smi", "print('<nvidia_smi_log><gpu id=')")
    assert run("--sysfs-root", str(hgx(builder)), "--compare-nvidia-smi", "--nvidia-smi", str(tool.path)) == 2
    assert capsys.readouterr().err.startswith("rayborg discover: nvidia-smi printed no XML log (")


def test_out_writes_a_capture_that_reproduces_the_report(builder, nvidia_smi, tmp_path, capsys):
    root, out = hgx(builder), tmp_path / "out"
    rc, comparison = compare_json(root, nvidia_smi(GPUS), "--drivers", "nvidia_gpu", "--out", str(out), capsys=capsys)
    assert rc == 0 and comparison["capture"] == {"sysfs": True, "tree.json": True}
    assert sorted(p.name for p in out.iterdir()) == ["comparison.json", "nvidia-smi.xml", "report.json", "sysfs",
                                                      "tree.json"]
    assert json.loads((out / "comparison.json").read_text()) == comparison
    report = json.loads((out / "report.json").read_text())
    assert report["hostname"] == "gpu-host" and [d["key"] for d in report["devices"]] == [
        "nvidia_gpu:0000:17:00.0", "nvidia_gpu:0000:9a:00.0"]
    assert report["devices"][0]["deployables"][0]["name"] == "gpu-host_0000_17_00_0"
    # only NVIDIA functions, only the files the drivers read; links relative, as the kernel's
    assert sorted(p.name for p in (out / "sysfs/bus/pci/devices").iterdir()) == [
        "0000:05:00.0", "0000:17:00.0", "0000:9a:00.0"]
    gpu = out / "sysfs/devices/pci0000:17/0000:17:00.0"
    assert sorted(p.name for p in gpu.iterdir()) == [
        "class", "device", "driver", "iommu_group", "numa_node", "subsystem_device", "subsystem_vendor", "vendor"]
    assert os.readlink(gpu / "driver") == "../../../bus/pci/drivers/nvidia"
    # discovery on the capture, moved elsewhere as a fixture would be, gives the report's devices
    fixture = shutil.copytree(out, tmp_path / "moved", symlinks=True)
    for where in (fixture / "sysfs", fixture / "tree.json"):
        assert run("--sysfs-root", str(where), "--hostname", "gpu-host", "--drivers", "nvidia_gpu", "--json") == 0
        again = json.loads(capsys.readouterr().out)
        assert again["devices"] == report["devices"] and again["content_hash"] == report["content_hash"]


def test_out_anonymises_nvidia_smi_log(builder, nvidia_smi, tmp_path, capsys):
    out = tmp_path / "out"
    assert run("--sysfs-root", str(hgx(builder)), "--compare-nvidia-smi", "--nvidia-smi",
               str(nvidia_smi(GPUS).path), "--out", str(out)) == 0
    log = (out / "nvidia-smi.xml").read_text()
    for secret in ("1654923005123", "1654923005456", "3f2a8e1c", "8c1d2e3f", "alice"):
        assert secret not in log
    assert log.count("<uuid>GPU-00000000-0000-0000-0000-00000000000") == 2 and "<serial>0000000000001</serial>" in log
    assert log.startswith('<?xml version="1.0" ?>\n<!DOCTYPE nvidia_smi_log')  # otherwise as nvidia-smi printed it
    assert [g.address for g in parse_nvidia_smi(log)[1]] == ["0000:17:00.0", "0000:9a:00.0"]
    report = (out / "report.json").read_text()
    assert "gpu-host" in report and os.uname().nodename not in report


def test_capture_of_vgpus_with_vfs_and_mdevs(family_tree, builder, nvidia_smi, tmp_path, capsys):
    root = family_tree("nvidia_vgpu")  # two virtualized T4s, one with an mdev
    # SR-IOV vGPU (Ampere and later): the VFs carry the mdev types, one VF has an mdev
    builder.vfs("0000:86:00.0", ["0000:86:00.4", "0000:86:00.5"], device="0x1eb8", driver="nvidia", total_vfs=16)
    for vf in ("0000:86:00.4", "0000:86:00.5"):
        builder.mdev_types(vf, {"nvidia-223": {"name": "GRID T4-2B", "available_instances": 1}})
    builder.mdev("0000:86:00.5", "nvidia-223", "1c6d51d2-5a9b-4a6e-8f44-9a0b6a2c4e11")
    t4 = {"device": "0x1eb8", "product": "Tesla T4", "virtualization": "Host VGPU"}
    rc, comparison = compare_json(root, nvidia_smi({"0000:86:00.0": t4, "0000:af:00.0": t4}),
                                  "--out", str(tmp_path / "out"), capsys=capsys)
    assert [(g["address"], g["status"]) for g in comparison["gpus"]] == [
        ("0000:86:00.0", "match"), ("0000:86:00.4", "VF (nvidia-smi lists physical GPUs only)"),
        ("0000:86:00.5", "VF (nvidia-smi lists physical GPUs only)"), ("0000:af:00.0", "match")]
    assert rc == 0 and comparison["capture"] == {"sysfs": True, "tree.json": True}
    tree = json.loads((tmp_path / "out/tree.json").read_text())
    assert [d["address"] for d in tree["pci"]] == ["0000:86:00.0", "0000:af:00.0"]
    assert tree["pci"][0]["vfs"] == {"addresses": ["0000:86:00.4", "0000:86:00.5"], "device": "0x1eb8",
                                     "driver": "nvidia"}
    assert tree["pci"][1]["mdev_types"]["nvidia-223"]["available_instances"] == 8  # 7 left + 1 mdev


def test_out_needs_compare_and_an_empty_capture_dir(builder, nvidia_smi, tmp_path, capsys):
    assert run("--out", str(tmp_path / "out")) == 2
    assert capsys.readouterr().err == "rayborg discover: --out and --nvidia-smi need --compare-nvidia-smi\n"
    (tmp_path / "out/sysfs/bus").mkdir(parents=True)
    assert run("--sysfs-root", str(hgx(builder)), "--compare-nvidia-smi", "--nvidia-smi",
               str(nvidia_smi(GPUS).path), "--out", str(tmp_path / "out")) == 2
    assert "already holds a sysfs/ capture" in capsys.readouterr().err


@pytest.mark.parametrize("text, address", [("00000000:17:00.0", "0000:17:00.0"), ("00000000:9A:00.0", "0000:9a:00.0"),
                                           ("0000:3B:00.0", "0000:3b:00.0"), ("00000001:C1:00.0", "0001:c1:00.0")])
def test_bus_id_in_sysfs_spelling(text, address):
    assert bus_id(text) == address


@pytest.mark.parametrize("text", ["233510DE", "0x233510DE", "0x233510de"])
def test_pci_device_id_is_device_high_vendor_low(text):
    assert pci_ids(text) == ("0x10de", "0x2335")


@pytest.mark.parametrize("model, product, fits", [
    ("H200-SXM-141GB", "NVIDIA H200", True), ("H100-PCIE", "NVIDIA H100 PCIe", True), ("Tesla T4", "Tesla T4", True),
    ("A10", "NVIDIA A100-SXM4-80GB", False), ("0x2b85", "NVIDIA B200", False), ("L40", "", False)])
def test_model_fits_product_name(model, product, fits):
    assert model_fits(model, product) is fits


def test_anonymise_keeps_na_and_maps_repeats_to_one_placeholder():
    log = "<uuid>GPU-ab</uuid><uuid>GPU-ab</uuid><uuid>MIG-cd</uuid><serial>N/A</serial><vm_name>db1</vm_name>"
    assert anonymise_xml(log) == ("<uuid>GPU-00000000-0000-0000-0000-000000000000</uuid>"
                                  "<uuid>GPU-00000000-0000-0000-0000-000000000000</uuid>"
                                  "<uuid>MIG-00000000-0000-0000-0000-000000000001</uuid>"
                                  "<serial>N/A</serial><vm_name>vm_name-0</vm_name>")


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU host: the README's check applies")
def test_real_sys_without_nvidia_smi_exits_2_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "rayborg", "discover", "--compare-nvidia-smi"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == ["rayborg discover: nvidia-smi not found: no executable 'nvidia-smi' on PATH "
                                        "(install the NVIDIA driver or pass --nvidia-smi PATH)"]


def test_a_failing_capture_is_a_difference_not_a_crash(builder, nvidia_smi, tmp_path, monkeypatch, capsys):
    from rayborg.commands.discover import gpu_check

    def broken(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(gpu_check, "capture_sysfs", broken)
    rc, out = compare_json(hgx(builder), nvidia_smi(GPUS), "--out", str(tmp_path / "out"), capsys=capsys)
    assert rc == 1 and [g["status"] for g in out["gpus"]] == ["match", "match"]
    assert out["differences"] == [f"capture into {tmp_path / 'out'} failed: PermissionError: [Errno 13] Permission denied"]

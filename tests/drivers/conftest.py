"""Fixtures for driver tests: fixture sysfs trees, stand-in vendor tools, bitstream files."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

from rayborg.drivers.sysfs_tree import SysfsBuilder, fixture_tree


@pytest.fixture
def sysfs(tmp_path) -> Path:
    root = tmp_path / "sys"
    root.mkdir()
    return root


@pytest.fixture
def builder(sysfs) -> SysfsBuilder:
    return SysfsBuilder(sysfs)


@pytest.fixture
def family_tree(sysfs):
    """family_tree("intel_fpga") expands the intel_fpga driver's example host into a fresh root."""
    return lambda driver: fixture_tree(driver, sysfs)


class Tool:
    """A stand-in vendor tool: a Python script that records its argv and then runs `body`."""

    def __init__(self, path: Path, record: Path):
        self.path, self.record = path, record

    @property
    def calls(self) -> list[list[str]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]


@pytest.fixture
def make_tool(tmp_path):
    def make(name: str, body: str = "") -> Tool:
        path, record = tmp_path / "bin" / name, tmp_path / f"{name}.calls"
        path.parent.mkdir(exist_ok=True)
        path.write_text(
            f"#!{sys.executable}\n"
            "import json, os, pathlib, sys, time\n"
            f"with open({str(record)!r}, 'a') as fh:\n"
            "    fh.write(json.dumps(sys.argv[1:]) + '\\n')\n"
            f"{body}\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
        return Tool(path, record)
    return make


META = {"bs-name": "aes-128", "vendor": "Intel", "board": "PAC_ARRIA10", "version": "1.0",
        "region_uuid": "ce48969398f05f33946d560708be108a", "function_name": "aes"}


@pytest.fixture
def make_bitstream(tmp_path):
    """Writes a bitstream file (JSON body the stand-in tools read) + its `.json` sidecar."""
    def make(bs_uuid: str, function_uuid: str, directory: Path | None = None, **meta) -> Path:
        d = directory or tmp_path / "bitstreams"
        d.mkdir(exist_ok=True)
        path = d / f"{bs_uuid}.gbs"
        path.write_text(json.dumps({"afu_id": function_uuid}))
        props = META | {"bs-uuid": bs_uuid, "function_uuid": function_uuid} | meta
        props = {k: v for k, v in props.items() if v is not None}
        (d / f"{bs_uuid}.gbs.json").write_text(json.dumps(props))
        return path
    return make

"""Fake driver: any number of simulated devices of any family, deterministic and fast.

Config (driver option `spec`, or the `--fake` CLI flag):
    ""                          upstream's fake device: one FPGA, vendor 0xabcd, 16 TEST_PCI handles
    "fpga:4,gpu:2"              4 FPGAs and 2 GPUs, each with the family's default accelerator count
    "fpga:4x8"                  4 FPGAs of 8 accelerators (handles) each
    {"fpga": 4, "qat": "2x4"}   the same as a dict, or as JSON text
Other options: `seed` (int: selects the PCI domain so two fake hosts differ), `fail_program`
(deployable names whose programming fails, to test error paths), `program_seconds` (how long a
simulated programming takes, for progress bars, benchmarks and kill-mid-programming tests),
`program_hold` (a file path: while that file exists, a programming waits, so that a test holds a
batch mid-way and knows it is there until it removes the file).

Every attach handle is TEST_PCI (Nova ignores those, ussuri nova-cyborg-interaction). FPGAs can be
"programmed": the bitstream id and function trait show on the next discovery.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from typing import Any

from rayborg.drivers.base import (BitstreamError, ControlPathId, Discovery, Driver, DriverAttachHandle,
                                  DriverDeployable, DriverDevice, DriverFailure, ProgrammingError, custom_name)
from rayborg.drivers.bitstreams import Bitstream


@dataclass(frozen=True)
class Family:
    type: str
    vendor: str
    model: str
    rc: str
    traits: tuple[str, ...]
    per_device: int = 1


FAMILIES: dict[str, Family] = {
    "fpga": Family("FPGA", "0xabcd", "FakeFPGA", "FPGA", ("CUSTOM_FAKE_DEVICE", "CUSTOM_FPGA_FAKE")),
    "gpu": Family("GPU", "0xabcd", "FakeGPU", "PGPU", ("OWNER_CYBORG", "CUSTOM_FAKE_GPU")),
    "vgpu": Family("GPU", "0xabcd", "FakeVGPU", "VGPU", ("OWNER_CYBORG", "CUSTOM_FAKE_VGPU"), 4),
    "qat": Family("QAT", "0xabcd", "FakeQAT", "CUSTOM_QAT", ("CUSTOM_FAKE_QAT",)),
    "nic": Family("NIC", "0xabcd", "FakeNIC", "CUSTOM_NIC", ("CUSTOM_FAKE_NIC", "CUSTOM_VF")),
    "ssd": Family("SSD", "0xabcd", "FakeSSD", "CUSTOM_SSD", ("CUSTOM_SSD_FAKE",)),
    "nvme": Family("NVME", "0xabcd", "FakeNVMe", "CUSTOM_SSD", ("CUSTOM_SSD_FAKE",)),
    "pmem": Family("PMEM", "0xabcd", "FakePMEM", "CUSTOM_PMEM_NAMESPACE_FAKE", ("CUSTOM_PMEM_NAMESPACE_FAKE",), 2),
    "aichip": Family("AICHIP", "0xabcd", "FakeAIChip", "CUSTOM_ACCELERATOR_AICHIP", ("CUSTOM_FAKE_AICHIP",)),
}
_COUNT = re.compile(r"^\s*(\d+)\s*(?:x\s*(\d+))?\s*$")


def parse_spec(spec: str | dict[str, Any] | None) -> list[tuple[str, int, int]]:
    """`"fpga:4x8,gpu:2"` -> [("fpga", 4, 8), ("gpu", 2, 1)]; raises ValueError with a readable message."""
    if spec is None or spec == "" or spec == {}:
        return []
    if isinstance(spec, str) and spec.lstrip().startswith("{"):
        spec = json.loads(spec)
    items = spec.items() if isinstance(spec, dict) else (
        part.split(":", 1) if ":" in part else (part, "1") for part in spec.split(",") if part.strip())
    out = []
    for family, count in items:
        family = str(family).strip().lower()
        if family not in FAMILIES:
            raise ValueError(f"unknown fake family {family!r} (known: {', '.join(FAMILIES)})")
        m = _COUNT.match(str(count))
        if not m:
            raise ValueError(f"bad fake count {count!r} for {family} (want N or NxM)")
        out.append((family, int(m.group(1)), int(m.group(2) or FAMILIES[family].per_device)))
    return out


class FakeDriver(Driver):
    NAME = "fake"
    TYPE = "FPGA"
    VENDOR = "0xabcd"

    def __init__(self, ctx=None):
        super().__init__(ctx)
        self.spec = parse_spec(self.options.get("spec"))
        self.domain = int(self.options.get("seed", 0)) % 0x10000
        self.fail_program = set(self.options.get("fail_program", ()))
        self.program_seconds = float(self.options.get("program_seconds", 0))
        self.program_hold = self.options.get("program_hold")
        self.programmed: dict[str, Bitstream | str] = {}  # deployable name -> bitstream

    def discover(self) -> Discovery:
        if not self.spec:
            return Discovery(devices=[self._upstream_device()])
        devices = []
        slot = 0
        for family, count, per in self.spec:
            for i in range(count):
                devices.append(self._device(family, i, per, slot))
                slot += (per + 7) // 8
        return Discovery(devices=devices)

    def _pci(self, slot: int, function: int = 0) -> dict[str, str]:
        """Slot n -> a unique PCI address: 32 devices per bus, 256 buses per domain."""
        domain = (self.domain + slot // 8192) % 0x10000
        return {"bus": f"{(slot // 32) % 256:02x}", "device": f"{slot % 32:02x}",
                "domain": f"{domain:04x}", "function": str(function)}

    def _device(self, family: str, index: int, per: int, slot: int) -> DriverDevice:
        f = FAMILIES[family]
        cpid = self._pci(slot)
        address = f"{cpid['domain']}:{cpid['bus']}:{cpid['device']}.0"
        name = self.ctx.dep_name(f"fake_{family}_{index}")
        handles = [DriverAttachHandle.model_construct(attach_type="TEST_PCI", in_use=False,
                                                      attach_info=self._pci(slot + j // 8, j % 8))
                   for j in range(per)]
        traits = list(f.traits)
        bitstream_id = None
        if (bs := self.programmed.get(name)) is not None:
            bitstream_id = bs if isinstance(bs, str) else bs.image_id
            if isinstance(bs, Bitstream):
                traits.append(custom_name("FPGA_FUNCTION_ID_FAKE", bs.meta.function_uuid))
        attributes = {"rc": f.rc} | {f"trait{i}": t for i, t in enumerate(traits)}
        dep = DriverDeployable.model_construct(name=name, num_accelerators=per, driver_name=self.NAME,
                                               bitstream_id=bitstream_id, resource_class=f.rc, traits=traits,
                                               attributes=dict(sorted(attributes.items())),
                                               attach_handles=handles, children=[])
        return DriverDevice.model_construct(
            type=f.type, vendor=f.vendor, model=f.model, vendor_board_info="fake_vendor_info",
            std_board_info={"device_id": "0xabcd", "class": "Fake class", "family": family},
            key=f"{self.NAME}:{address}", controlpath_id=ControlPathId.model_construct(cpid_type="PCI", cpid_info=cpid),
            deployables=[dep], stub=False)

    def _upstream_device(self) -> DriverDevice:
        """Upstream's fake_driver device: one FPGA with 16 TEST_PCI handles (fn 1..16)."""
        handles = [DriverAttachHandle(attach_type="TEST_PCI", attach_info={
            "bus": "0c", "device": f"{n // 8:02x}", "domain": "0000", "function": str(n % 8)}) for n in range(1, 17)]
        dep = DriverDeployable(name=self.ctx.dep_name("FakeDevice"), num_accelerators=16, driver_name=self.NAME,
                               resource_class="FPGA", traits=["CUSTOM_FAKE_DEVICE"], attach_handles=handles)
        return DriverDevice(type="FPGA", vendor="0xabcd", model="miss model info",
                            std_board_info={"device_id": "0xabcd", "class": "Fake class"},
                            vendor_board_info="fake_vendor_info", key=f"{self.NAME}:0000:0c:00.0",
                            controlpath_id=ControlPathId(cpid_info={"bus": "0c", "device": "00",
                                                                    "domain": "0000", "function": "0"}),
                            deployables=[dep])

    def program(self, deployable: DriverDeployable | str, bitstream: Bitstream | str,
                *, timeout: float | None = None) -> DriverDeployable:
        name = deployable if isinstance(deployable, str) else deployable.name
        try:
            device, _ = self.find_deployable(name)
        except DriverFailure as exc:
            raise BitstreamError(str(exc), device=name) from None
        if device.type != "FPGA":
            raise ProgrammingError(f"a {device.type} cannot be programmed", device=name, tool="fake")
        if self.program_seconds:
            time.sleep(self.program_seconds)  # the stand-in for a vendor tool's run time
        while self.program_hold and os.path.exists(self.program_hold):
            time.sleep(0.02)
        if name in self.fail_program:
            raise ProgrammingError("simulated programming failure", device=name, tool="fake", exit_code=1)
        self.programmed[name] = bitstream
        return self.find_deployable(name)[1]

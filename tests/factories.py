"""Build device trees and profiles straight in the store, for API and state-machine tests; and a
stand-in for the hosts' programming."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import pytest

from rayborg.store.tables import (AttachHandle, Attribute, ControlPathID, Deployable, Device,
                                  DeviceProfile)


@dataclass
class Tree:
    device_uuid: str
    device_id: int
    deployable_uuids: list[str] = field(default_factory=list)
    deployable_ids: list[int] = field(default_factory=list)
    rp_uuids: list[str] = field(default_factory=list)
    handle_ids: list[int] = field(default_factory=list)


def add_device(store, hostname: str = "host1", type: str = "FPGA", vendor: str = "0x8086",
               model: str = "PAC Arria10", rc: str = "FPGA", traits: tuple[str, ...] = ("CUSTOM_FPGA_INTEL",),
               deployables: int = 1, handles_per_deployable: int = 2, bus: int = 0x5e,
               attach_type: str = "PCI", driver_name: str = "intel_fpga") -> Tree:
    """One device with `deployables` deployables (each its own RP) and free attach handles."""
    import uuid

    def build(session) -> Tree:
        dev = Device(type=type, vendor=vendor, model=model, hostname=hostname,
                     std_board_info=json.dumps({"class": "0x120000", "device_id": "0x09c4"}),
                     vendor_board_info="", std_board_info_key=f"{driver_name}:{hostname}:{bus:02x}")
        session.add(dev)
        session.flush()
        cpid = ControlPathID(device_id=dev.id, cpid_type="PCI",
                             cpid_info=json.dumps({"domain": "0000", "bus": f"{bus:02x}", "device": "00",
                                                   "function": "0"}))
        session.add(cpid)
        session.flush()
        tree = Tree(device_uuid=dev.uuid, device_id=dev.id)
        for d in range(deployables):
            dep = Deployable(name=f"{hostname}_{model.replace(' ', '_')}_{bus:02x}_{d}",
                             num_accelerators=handles_per_deployable, device_id=dev.id,
                             driver_name=driver_name, rp_uuid=str(uuid.uuid4()))
            session.add(dep)
            session.flush()
            dep.root_id = dep.id
            session.add(Attribute(deployable_id=dep.id, key="rc", value=rc))
            for i, trait in enumerate(traits):
                session.add(Attribute(deployable_id=dep.id, key=f"trait{i}", value=trait))
            for h in range(handles_per_deployable):
                info = {"bus": f"{bus:02x}", "device": f"{d:02x}", "domain": "0000", "function": str(h)}
                ah = AttachHandle(deployable_id=dep.id, cpid_id=cpid.id, attach_type=attach_type,
                                  attach_info=json.dumps(info, sort_keys=True))
                session.add(ah)
                session.flush()
                tree.handle_ids.append(ah.id)
            tree.deployable_uuids.append(dep.uuid)
            tree.deployable_ids.append(dep.id)
            tree.rp_uuids.append(dep.rp_uuid)
        return tree

    return store.transact(build)


def add_profile(store, name: str = "fpga-dp1", groups: list[dict[str, str]] | None = None,
                description: str | None = None) -> str:
    groups = groups if groups is not None else [{"resources:FPGA": "1", "trait:CUSTOM_FPGA_INTEL": "required"}]

    def build(session) -> str:
        dp = DeviceProfile(name=name, groups=groups, description=description)
        session.add(dp)
        session.flush()
        return dp.uuid

    return store.transact(build)


def nova_bind_ops(hostname: str, rp_uuid: str, instance: str) -> list[dict]:
    """The JSON-Patch operations of one ARQ's bind as Nova sends them."""
    return [{"op": "add", "path": "/hostname", "value": hostname},
            {"op": "add", "path": "/device_rp_uuid", "value": rp_uuid},
            {"op": "add", "path": "/instance_uuid", "value": instance}]


class ProgrammingStandIn:
    """What RayProgrammer and the host's agent do with a recorded program request, without Ray: take
    it, run the "tool" (which fails with `error`, and holds while `hold` is clear), record the new
    bitstream as the agent's next report would, and end the request. `programmed` names the
    deployables it was asked for, in order. The app's PROGRAMMER with the fixtures below."""

    def __init__(self, store):
        self.store, self.error, self.hold = store, None, asyncio.Event()
        self.hold.set()
        self.programmed: list[str] = []
        self.tasks: list[asyncio.Task] = []

    async def submit(self, request_uuid: str) -> None:
        self.tasks.append(asyncio.get_running_loop().create_task(self._run(request_uuid)))

    async def _run(self, request_uuid: str) -> None:
        from sqlmodel import select

        from rayborg.store.queries import program_requests

        job = await self.store.atransact(program_requests.start, request_uuid)
        self.programmed.append(job.deployable_name)
        await self.hold.wait()
        if self.error is None:
            await self.store.atransact(lambda s: setattr(s.scalars(select(Deployable).where(
                Deployable.name == job.deployable_name)).one(), "bitstream_id", job.image_uuid))
        await self.store.atransact(program_requests.finish, request_uuid, self.error)

    async def drain(self) -> None:
        await asyncio.gather(*self.tasks)


@pytest.fixture(name="host")
def programming_host(store) -> ProgrammingStandIn:
    """Fixture `host`: the hosts' programming, stood in for. Import it into a test module together with
    `programming_app`, which makes it the front door's programmer."""
    return ProgrammingStandIn(store)


@pytest.fixture(name="app")
def programming_app(settings, store, host: ProgrammingStandIn):
    """Fixture `app`: the front door with the `host` stand-in as its programmer."""
    from rayborg.api.app import create_app
    from rayborg.api.app_keys import PROGRAMMER

    app = create_app(settings, store)
    app[PROGRAMMER] = host
    return app

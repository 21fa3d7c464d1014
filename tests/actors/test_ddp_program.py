"""Intel X710 DDP packages through the program path, with real actors: PATCH
/v2/deployables/{uuid}/program on an X710 deployable -> RayProgrammer -> the host's agent -> the X710
driver's `program` (a stand-in ethtool that loads the package) -> a sweep that reports the package
as the PF's deployables' bitstream and its profile as their `function`. Failures are 500 with the
tool's words (program_status failed); a slow tool is 202 (program_status programming). Also the
agent's firmware update (`update_firmware`) and the counters an agent reports."""

from __future__ import annotations

import asyncio
import json
import stat
import sys
import uuid as uuidlib

import pytest
import ray
from sqlmodel import select

from rayborg.actors.runtime_config import NAMESPACE, RuntimeConfig, host_agent_name
from rayborg.drivers.sysfs_tree import fixture_tree
from rayborg.store.tables import Attribute, Deployable, Device
from runtime_helpers import fresh_store, kill_runtime, make_compute_nodes, start_runtime, wait_for

pytestmark = [pytest.mark.xdist_group("ray"), pytest.mark.slow]
GTP = str(uuidlib.UUID(int=0x6770))
E810 = str(uuidlib.UUID(int=0xE810))
PF = "0000:3b:00.0"
VF_DEP = "host-a_0000_3b_02_0"


def _tool(path, body: str):
    record = path.with_suffix(".calls")
    path.write_text(f"#!{sys.executable}\nimport json, sys, time\n"
                    f"open({str(record)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return record


def calls(record) -> list[list[str]]:
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


def _package(directory, image_id, board, function):
    path = directory / f"{function}.pkgo"
    path.write_bytes(b"DDP package")
    (directory / f"{function}.pkgo.json").write_text(json.dumps({
        "bs-uuid": image_id, "bs-name": function.lower(), "vendor": "Intel", "board": board, "version": "1.0",
        "function_uuid": image_id, "function_name": function}))


@pytest.fixture
def x710_runtime(ray_cluster, placement_server, tmp_path):
    store = fresh_store(tmp_path)
    make_compute_nodes(placement_server.url, ["host-a"])
    root = fixture_tree("intel_x710", tmp_path / "sys")
    packages = tmp_path / "packages"
    packages.mkdir()
    _package(packages, GTP, "X710", "GTPv1")
    _package(packages, E810, "E810", "PPPoE")
    tools = tmp_path / "bin"
    tools.mkdir()
    # the stand-in ethtool sleeps when the package is named "slow" in the sysfs tree's flag file
    ethtool = _tool(tools / "ethtool", f"time.sleep(float(open({str(tmp_path / 'delay')!r}).read() or 0))\n"
                                       f"sys.exit(int(open({str(tmp_path / 'exit')!r}).read() or 0))")
    (tmp_path / "delay").write_text("0")
    (tmp_path / "exit").write_text("0")
    nvmupdate = _tool(tools / "nvmupdate64e", "print('Update successful')")
    config = RuntimeConfig(
        database_url=store.url, placement_url=placement_server.url, report_interval=0.5, retry_interval=0.2,
        host_overrides={"host-a": {"drivers": ["intel_x710"], "sysfs_root": str(root), "driver_options": {
            "intel_x710": {"ddp_tool": str(tools / "ethtool"), "firmware_tool": str(tools / "nvmupdate64e")},
            "bitstreams": {"dir": str(packages)}}},
            "host-b": {"drivers": []}, "host-c": {"drivers": []}})
    start_runtime(config)
    wait_for(lambda: store.query(lambda s: len(list(s.exec(select(Deployable))))) == 3, what="X710 deployables")
    yield {"store": store, "root": root, "ethtool": ethtool, "nvmupdate": nvmupdate, "tmp": tmp_path}
    kill_runtime()
    store.dispose()


@pytest.fixture
def app(x710_runtime):
    from rayborg.api.app import create_app
    from rayborg.api.app_keys import PROGRAMMER
    from rayborg.api.ray_programmer import RayProgrammer
    from rayborg.settings import Settings

    store = x710_runtime["store"]
    app = create_app(Settings(database_url=store.url, program_wait=30.0, _env_file=None), store)
    app[PROGRAMMER] = RayProgrammer(store)
    return app


def dep_uuid(store, name=VF_DEP) -> str:
    return store.query(lambda s: s.exec(select(Deployable.uuid).where(Deployable.name == name)).one())


def program_body(image):
    return [{"op": "replace", "path": "/program", "value": [{"image_uuid": image}]}]


def functions(store) -> dict[str, str]:
    def read(s):
        return {d.name: a.value for d, a in s.exec(select(Deployable, Attribute)
                                                   .join(Attribute, Attribute.deployable_id == Deployable.id)
                                                   .where(Attribute.key == "function"))}
    return store.query(read)


async def test_ddp_package_programmed_through_the_api(client, x710_runtime):
    store = x710_runtime["store"]
    uuid = dep_uuid(store)
    resp = await client.patch(f"/v2/deployables/{uuid}/program", json=program_body(GTP))
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["program_status"] == "done" and body["program_image_uuid"] == GTP
    assert calls(x710_runtime["ethtool"]) == [["-f", "eth2", str(x710_runtime["tmp"] / "packages" / "GTPv1.pkgo"),
                                               "100"]]
    # the agent's sweep after programming: both VFs of the PF run the package, eth3 does not
    wait_for(lambda: functions(store).get(VF_DEP) == "GTPv1", timeout=30, what="the profile reported")
    bitstreams = store.query(lambda s: {d.name: d.bitstream_id for d in s.exec(select(Deployable))})
    assert bitstreams == {VF_DEP: GTP, "host-a_0000_3b_02_1": GTP, "host-a_0000_3b_00_1": None}
    shown = await (await client.get(f"/v2/deployables/{uuid}")).json()
    assert shown["bitstream_id"] == GTP and {"function": "GTPv1"} in json.loads(shown["attributes_list"])


async def test_ddp_failures_are_500_with_the_reason(client, x710_runtime):
    store, tmp = x710_runtime["store"], x710_runtime["tmp"]
    uuid = dep_uuid(store, "host-a_0000_3b_00_1")
    resp = await client.patch(f"/v2/deployables/{uuid}/program", json=program_body(E810))
    assert resp.status == 500
    message = (await resp.json())["error_message"]
    assert "board 'E810'" in message and calls(x710_runtime["ethtool"]) == []
    (tmp / "exit").write_text("95")
    resp = await client.patch(f"/v2/deployables/{uuid}/program", json=program_body(GTP))
    assert resp.status == 500 and "exit code 95" in (await resp.json())["error_message"]
    shown = await (await client.get(f"/v2/deployables/{uuid}")).json()
    assert shown["program_status"] == "failed" and shown["bitstream_id"] is None
    resp = await client.patch(f"/v2/deployables/{uuid}/program", json=program_body(str(uuidlib.uuid4())))
    assert resp.status == 500  # no such package in the host's source


async def test_slow_ddp_load_is_202_then_done(client, app, x710_runtime):
    from rayborg.api.app_keys import SETTINGS

    store, tmp = x710_runtime["store"], x710_runtime["tmp"]
    app[SETTINGS].program_wait = 0.2
    (tmp / "delay").write_text("2")
    uuid = dep_uuid(store, "host-a_0000_3b_00_1")
    resp = await client.patch(f"/v2/deployables/{uuid}/program", json=program_body(GTP))
    assert resp.status == 202
    assert (await resp.json())["program_status"] in ("requested", "programming")

    async def status():
        return (await (await client.get(f"/v2/deployables/{uuid}")).json())["program_status"]

    for _ in range(100):
        if await status() == "done":
            break
        await asyncio.sleep(0.1)
    assert await status() == "done"


def test_firmware_update_through_the_agent_and_counters_reported(x710_runtime, tmp_path):
    store = x710_runtime["store"]
    agent = ray.get_actor(host_agent_name("host-a"), namespace=NAMESPACE)
    image = tmp_path / "nvmupdate.cfg"
    image.write_text("CONFIG VERSION: 1.20.0\n")
    result = ray.get(agent.update_firmware.remote("intel_x710", PF, str(image)), timeout=60)
    assert result["ok"] and "Update successful" in result["output"]
    assert calls(x710_runtime["nvmupdate"]) == [["-u", "-l", "-c", str(image), "-m", "3cfdfea1b2c0"]]
    bad = ray.get(agent.update_firmware.remote("intel_x710", PF, str(tmp_path / "none.cfg")), timeout=60)
    assert not bad["ok"] and "does not exist" in bad["error"]
    # the interface counters reached the store, and moving ones are sent without a content change
    stats = lambda: store.query(lambda s: s.exec(select(Device.stats).where(  # noqa: E731
        Device.std_board_info_key == f"intel_x710:{PF}")).one())
    assert stats()["rx_packets"] == 81234
    before = ray.get(agent.status.remote())
    (x710_runtime["root"] / f"bus/pci/devices/{PF}/net/eth2/statistics/rx_packets").write_text("7\n")
    wait_for(lambda: stats()["rx_packets"] == 7, timeout=30, what="the new counter in the store")
    # The agent counts a report once PlacementSync has applied it: its status may answer in between.
    wait_for(lambda: ray.get(agent.status.remote())["stats_reports_sent"] > before["stats_reports_sent"],
             timeout=30, what="the agent to count its counter-only report")
    assert ray.get(agent.status.remote())["reports_sent"] == before["reports_sent"]

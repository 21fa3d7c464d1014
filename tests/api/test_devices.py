"""/v2/devices: list and filters, show, status by microversion, enable/disable, policy, bad input."""

import json

import pytest
from cyborg_errors import cyborg_fault
from factories import add_device
from sqlmodel import select

from rayborg.store.tables import Deployable, Device

V = "OpenStack-API-Version"
MEMBER = {"X-User-Id": "u", "X-Project-Id": "p1", "X-Roles": "member"}
ADMIN = {"X-User-Id": "a", "X-Project-Id": "p1", "X-Roles": "admin"}


@pytest.fixture
def trees(store):
    return [add_device(store, hostname="host1", type="FPGA", vendor="0x8086", bus=0x5e),
            add_device(store, hostname="host2", type="GPU", vendor="0x10de", model="T4", rc="PGPU",
                       traits=("CUSTOM_GPU_NVIDIA",), bus=0x3b)]


async def test_list_all_and_fields(client, trees):
    resp = await client.get("/v2/devices")
    assert resp.status == 200
    devices = (await resp.json())["devices"]
    assert [d["uuid"] for d in devices] == [t.device_uuid for t in trees]
    d = devices[0]
    assert set(d) == {"uuid", "type", "vendor", "model", "std_board_info", "vendor_board_info", "hostname",
                      "created_at", "updated_at", "links"}
    assert json.loads(d["std_board_info"])["device_id"] == "0x09c4"
    assert d["links"][0]["href"].endswith(f"/v2/devices/{d['uuid']}")
    assert d["created_at"].endswith("+00:00") and d["updated_at"] is None


@pytest.mark.parametrize("query,hosts", [("?type=GPU", ["host2"]), ("?vendor=0x8086", ["host1"]),
                                         ("?hostname=host2&type=GPU", ["host2"]), ("?type=GPU&vendor=0x8086", []),
                                         ("?hostname=nowhere", [])])
async def test_filters(client, trees, query, hosts):
    resp = await client.get(f"/v2/devices{query}")
    assert [d["hostname"] for d in (await resp.json())["devices"]] == hosts


async def test_status_only_from_2_3(client, trees):
    uuid = trees[0].device_uuid
    for v, present in (("2.2", False), ("2.3", True)):
        resp = await client.get(f"/v2/devices/{uuid}", headers={V: f"accelerator {v}"})
        assert ("status" in await resp.json()) is present
        listed = (await (await client.get("/v2/devices", headers={V: f"accelerator {v}"})).json())["devices"]
        assert ("status" in listed[0]) is present
    assert (await resp.json())["status"] == "enabled"


async def test_disable_enable_is_idempotent_and_marks_placement_dirty(client, store, trees):
    uuid = trees[0].device_uuid
    store.transact(lambda s: [setattr(d, "placement_dirty", False) for d in s.exec(select(Deployable))])
    for _ in range(2):
        resp = await client.post(f"/v2/devices/{uuid}/disable")
        assert resp.status == 200 and await resp.read() == b""
    show = await client.get(f"/v2/devices/{uuid}", headers={V: "accelerator 2.3"})
    assert (await show.json())["status"] == "maintaining"
    dirty = store.query(lambda s: {d.device_id: d.placement_dirty for d in s.exec(select(Deployable))})
    assert dirty == {trees[0].device_id: True, trees[1].device_id: False}
    assert (await client.post(f"/v2/devices/{uuid}/enable")).status == 200
    assert store.query(lambda s: s.exec(select(Device).where(Device.uuid == uuid)).one().status) == "enabled"


async def test_policy(client, trees):
    uuid = trees[0].device_uuid
    for method, url, rule in (("GET", "/v2/devices", "cyborg:device:get_all"),
                              ("GET", f"/v2/devices/{uuid}", "cyborg:device:get_one"),
                              ("POST", f"/v2/devices/{uuid}/disable", "cyborg:device:disable"),
                              ("POST", f"/v2/devices/{uuid}/enable", "cyborg:device:enable")):
        resp = await client.request(method, url, headers=MEMBER)
        assert await cyborg_fault(resp, 403) == f"Access was denied to the following resource: {rule}"
        assert (await client.request(method, url, headers=ADMIN)).status == 200


@pytest.mark.parametrize("method,url,status", [
    ("GET", "/v2/devices?colour=red", 400), ("GET", "/v2/devices/not-a-uuid", 400),
    ("GET", "/v2/devices?hostname=a%00b", 400), ("GET", "/v2/devices?type=GPU&type=FPGA", 400),
    ("GET", "/v2/devices/4cd3925c-04dd-4618-a0ab-c861f6c06803", 404),
    ("POST", "/v2/devices/4cd3925c-04dd-4618-a0ab-c861f6c06803/disable", 404),
    ("POST", "/v2/devices/nope/enable", 400), ("DELETE", "/v2/devices/4cd3925c-04dd-4618-a0ab-c861f6c06803", 405)])
async def test_bad_input(client, trees, method, url, status):
    resp = await client.request(method, url)
    await cyborg_fault(resp, status)


async def test_limit_and_marker(client, trees):
    first = (await (await client.get("/v2/devices?limit=1")).json())["devices"]
    assert len(first) == 1
    rest = (await (await client.get(f"/v2/devices?limit=5&marker={first[0]['uuid']}")).json())["devices"]
    assert [d["uuid"] for d in rest] == [trees[1].device_uuid]

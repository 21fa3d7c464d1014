"""Nested FPGA deployables through the REST API: the card and its PR regions with parent_id/root_id,
a bind that lands on a region (never on the card, which holds no accelerator), a Nova bind naming a
region's RP, and PATCH .../program of one region that programs that region only."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from factories import add_profile
from factories import programming_app, programming_host  # noqa: F401 (the fixtures app, host)
from sqlmodel import select

from rayborg.api.app_keys import BINDER
from rayborg.drivers import discover_host
from rayborg.drivers.sysfs_tree import FIXTURE_TREES, build_tree
from rayborg.store.host_reports import apply_report
from rayborg.store.tables import AttachHandle, Deployable

HOST = "node1"
CARD, REGION0, REGION1 = "node1_0000_3b_00_0", "node1_0000_3b_00_0_region0", "node1_0000_3b_00_0_region1"
COMPAT = "CUSTOM_FPGA_REGION_INTEL_9346116D5B5A5BD3AB1B1B7AB25C7CD8"
EMPTY = "CUSTOM_FPGA_FUNCTION_ID_INTEL_00000000000000000000000000000000"
IMAGE = "76babc1b-3222-4992-a046-52441e403577"
PROGRAM = [{"op": "replace", "path": "/program", "value": [{"image_uuid": IMAGE}]}]
MEMBER = {"X-Project-Id": "p1", "X-User-Id": "u1", "X-Roles": "member"}
NOVA = {**MEMBER, "X-Service-Roles": "service"}


@pytest.fixture
def nested(store, tmp_path) -> None:
    """The DFL example host reported into the store."""
    root = build_tree(tmp_path / "sys", FIXTURE_TREES / "intel_fpga" / "dfl_regions.json")
    store.transact(apply_report, discover_host(HOST, root, drivers=["intel_fpga"]))


async def listed(client) -> dict[str, dict]:
    resp = await client.get("/v2/deployables")
    assert resp.status == 200
    return {d["name"]: d for d in (await resp.json())["deployables"]}


def handle_of(store, name: str) -> list[str]:
    stmt = select(AttachHandle.uuid).join(Deployable, Deployable.id == AttachHandle.deployable_id).where(
        Deployable.name == name)
    return store.query(lambda s: list(s.scalars(stmt)))


async def test_the_card_and_its_regions_are_listed_as_a_tree(client, nested):
    deps = await listed(client)
    card, r0, r1 = deps[CARD], deps[REGION0], deps[REGION1]
    assert card["parent_id"] is None and card["num_accelerators"] == 0
    assert r0["parent_id"] == r1["parent_id"] == card["root_id"] == r0["root_id"] == r1["root_id"]
    assert r0["device_id"] == card["device_id"] and r0["num_accelerators"] == 1
    assert r0["rp_uuid"] != card["rp_uuid"]
    assert '"region_id"' not in card["attributes_list"] and COMPAT in r1["attributes_list"]
    shown = await client.get(f"/v2/deployables/{r1['uuid']}")
    assert shown.status == 200 and (await shown.json())["parent_id"] == card["root_id"]


async def test_a_standalone_bind_lands_on_the_matching_region(client, store, nested):
    add_profile(store, "empty-region", [{"resources:FPGA": "1", f"trait:{COMPAT}": "required",
                                         f"trait:{EMPTY}": "required"}])
    resp = await client.post("/v2/accelerator_requests", json={"device_profile_name": "empty-region"},
                             headers=MEMBER)
    assert resp.status == 201
    (arq,) = (await resp.json())["arqs"]
    resp = await client.patch("/v2/accelerator_requests", headers=NOVA, json={arq["uuid"]: [
        {"op": "add", "path": "/hostname", "value": HOST},
        {"op": "add", "path": "/instance_uuid", "value": str(uuid.uuid4())}]})
    assert resp.status == 202, await resp.text()
    await client.app[BINDER].drain()
    shown = await (await client.get(f"/v2/accelerator_requests/{arq['uuid']}", headers=MEMBER)).json()
    deps = await listed(client)
    assert shown["state"] == "Bound", shown
    assert shown["device_rp_uuid"] == deps[REGION1]["rp_uuid"]
    assert shown["attach_handle_info"] == {"bus": "3b", "device": "00", "domain": "0000", "function": "2"}
    assert [shown["attach_handle_uuid"]] == handle_of(store, REGION1)


async def test_a_nova_bind_on_a_region_rp_takes_that_region_and_the_card_rp_is_refused(client, store, nested):
    add_profile(store, "any-fpga", [{"resources:FPGA": "1"}])
    deps = await listed(client)
    arqs = []
    for _ in range(2):
        resp = await client.post("/v2/accelerator_requests", json={"device_profile_name": "any-fpga"},
                                 headers=MEMBER)
        arqs += (await resp.json())["arqs"]
    on_region, on_card = arqs
    body = {a["uuid"]: [{"op": "add", "path": "/hostname", "value": HOST},
                        {"op": "add", "path": "/device_rp_uuid", "value": deps[name]["rp_uuid"]},
                        {"op": "add", "path": "/instance_uuid", "value": str(uuid.uuid4())}]
            for a, name in ((on_region, REGION0), (on_card, CARD))}
    resp = await client.patch("/v2/accelerator_requests", headers=NOVA, json=body)
    assert resp.status == 202, await resp.text()
    await client.app[BINDER].drain()
    region = await (await client.get(f"/v2/accelerator_requests/{on_region['uuid']}", headers=MEMBER)).json()
    card = await (await client.get(f"/v2/accelerator_requests/{on_card['uuid']}", headers=MEMBER)).json()
    assert region["state"] == "Bound" and [region["attach_handle_uuid"]] == handle_of(store, REGION0)
    assert region["attach_handle_info"]["function"] == "1"
    # the card itself has no accelerator to give: the bind fails, and no handle is taken for it
    assert card["state"] == "BindFailed" and card["attach_handle_uuid"] is None


async def test_programming_a_region_programs_that_region_only(client, host, nested):
    deps = await listed(client)
    resp = await client.patch(f"/v2/deployables/{deps[REGION0]['uuid']}/program", json=PROGRAM)
    assert resp.status in (200, 202), await resp.text()
    await asyncio.gather(*host.tasks)
    assert host.programmed == [REGION0]
    after = await listed(client)
    assert after[REGION0]["bitstream_id"] == IMAGE
    assert after[REGION1]["bitstream_id"] is None and after[CARD]["bitstream_id"] is None
    assert after[REGION0]["program_status"] == "done" and after[REGION1]["program_status"] is None


async def test_openstacksdk_reads_the_tree(client, nested):
    """The SDK's Deployable resource (clients.md: uuid -> .id, parent_id, root_id) takes the answers."""
    from openstack.accelerator.v2.deployable import Deployable as SdkDeployable

    deps = await listed(client)
    parsed = {d["name"]: SdkDeployable.existing(**d) for d in deps.values()}
    card, region = parsed[CARD], parsed[REGION1]
    assert (region.id, region.parent_id, region.root_id) == (deps[REGION1]["uuid"], card.root_id, card.root_id)
    assert card.parent_id is None and card.num_accelerators == 0 and region.num_accelerators == 1

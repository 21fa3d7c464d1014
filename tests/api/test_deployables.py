"""/v2/deployables: list, show, attributes_list, links, program requests and their errors."""

import json

import pytest
from cyborg_errors import cyborg_fault
from factories import add_device, add_profile
from sqlmodel import select

from rayborg.store import arq_state
from rayborg.store.tables import ProgramRequest

IMAGE = "76babc1b-3222-4992-a046-52441e403577"
PROGRAM = [{"op": "replace", "path": "/program", "value": [{"image_uuid": IMAGE}]}]
MEMBER = {"X-User-Id": "u", "X-Project-Id": "p1", "X-Roles": "member"}


@pytest.fixture
def tree(store):
    return add_device(store, hostname="host1", deployables=2, traits=("CUSTOM_FPGA_INTEL", "CUSTOM_X"))


def requests(store):
    return store.query(lambda s: [(r.image_uuid, r.state) for r in s.exec(select(ProgramRequest))])


async def test_list_and_show(client, tree):
    deps = (await (await client.get("/v2/deployables")).json())["deployables"]
    assert [d["uuid"] for d in deps] == tree.deployable_uuids
    d = deps[0]
    assert d["device_id"] == tree.device_id and d["root_id"] == tree.deployable_ids[0] and d["parent_id"] is None
    assert d["rp_uuid"] == tree.rp_uuids[0] and d["driver_name"] == "intel_fpga" and d["num_accelerators"] == 2
    assert json.loads(d["attributes_list"]) == [{"rc": "FPGA"}, {"trait0": "CUSTOM_FPGA_INTEL"},
                                                 {"trait1": "CUSTOM_X"}]
    assert [link["rel"] for link in d["links"]] == ["self", "bookmark"]
    assert d["links"][1]["href"].endswith(f"/deployables/{d['uuid']}") and "/v2/" not in d["links"][1]["href"]
    shown = await client.get(f"/v2/deployables/{d['uuid']}")
    assert await shown.json() == d


@pytest.mark.parametrize("path", ["/program", "/program/{uuid}"])
async def test_program_records_the_request(client, store, tree, path):
    uuid = tree.deployable_uuids[0]
    resp = await client.patch(f"/v2/deployables/{uuid}{path.format(uuid=uuid)}", json=PROGRAM)
    assert resp.status == 200
    assert (await resp.json())["uuid"] == uuid
    assert requests(store) == [(IMAGE, "requested")]


async def test_program_by_an_admin_records_the_project(client, store, tree):
    resp = await client.patch(f"/v2/deployables/{tree.deployable_uuids[0]}/program", json=PROGRAM,
                              headers={"X-User-Id": "a", "X-Project-Id": "p9", "X-Roles": "admin"})
    assert resp.status == 200
    assert store.query(lambda s: [r.project_id for r in s.exec(select(ProgramRequest))]) == ["p9"]


ONE_OP = "The program request must be a JSON-Patch list with one operation"


@pytest.mark.parametrize("body,message", [
    ({"op": "replace"}, ONE_OP), ([], ONE_OP), (PROGRAM * 2, ONE_OP),
    ([{"op": "bogus", "path": "/program", "value": []}], "Invalid JSON-Patch: Unknown operation 'bogus'"),
    ([{"op": "replace", "path": "/bitstream", "value": [{"image_uuid": IMAGE}]}],
     "Only 'replace' of '/program' is supported, not 'replace' of '/bitstream'"),
    ([{"op": "add", "path": "/program", "value": [{"image_uuid": IMAGE}]}],
     "Only 'replace' of '/program' is supported, not 'add' of '/program'"),
    ([{"op": "replace", "path": "/program", "value": [{"image_uuid": "not-a-uuid"}]}],
     "Invalid image_uuid: 'not-a-uuid' is not a valid UUID"),
    ([{"op": "replace", "path": "/program", "value": [{"image_uuid": IMAGE, "extra": 1}]}],
     "unknown field 'value.0.extra'"),
    ([{"op": "replace", "path": "/program", "value": []}], "value: List should have at least 1 item"),
    ([{"op": "replace", "path": "program", "value": [{"image_uuid": IMAGE}]}],
     "Invalid JSON-Patch: Location must start with /"),
    (["x"], "Invalid JSON-Patch: Document is expected to be sequence of operations")])
async def test_program_bad_bodies_are_400_and_record_nothing(client, store, tree, body, message):
    resp = await client.patch(f"/v2/deployables/{tree.deployable_uuids[0]}/program", json=body)
    assert message in await cyborg_fault(resp, 400)
    assert requests(store) == []


async def test_program_errors(client, store, tree):
    uuid = tree.deployable_uuids[0]
    resp = await client.patch("/v2/deployables/4cd3925c-04dd-4618-a0ab-c861f6c06803/program", json=PROGRAM)
    assert "4cd3925c-04dd-4618-a0ab-c861f6c06803" in await cyborg_fault(resp, 404)
    resp = await client.patch(f"/v2/deployables/{uuid}/program", data=b"{not json",
                              headers={"Content-Type": "application/json"})
    await cyborg_fault(resp, 400)
    resp = await client.patch(f"/v2/deployables/{uuid}/program", data=b"x", headers={"Content-Type": "text/xml"})
    await cyborg_fault(resp, 415)
    resp = await client.patch(f"/v2/deployables/{uuid}/program", json=PROGRAM, headers=MEMBER)
    assert (await cyborg_fault(resp, 403)).endswith("cyborg:deployable:program")
    manager = await client.patch(f"/v2/deployables/{uuid}/program", json=PROGRAM,
                                 headers=dict(MEMBER, **{"X-Roles": "manager"}))
    assert manager.status == 403
    assert (await client.patch(f"/v2/deployables/{uuid}", json=PROGRAM)).status == 405
    assert requests(store) == []


async def test_program_refused_while_bound(client, store, tree):
    add_profile(store, "dp", [{"resources:FPGA": "1"}])
    arq = store.transact(arq_state.create_arqs, "dp", "p")[0].uuid
    store.transact(arq_state.start_bind, {arq: arq_state.BindTarget(
        "host1", tree.rp_uuids[0], "506220bc-18f2-4294-9b29-80267a021dc0", "p")})
    assert store.transact(arq_state.finish_bind, arq) == "Bound"
    resp = await client.patch(f"/v2/deployables/{tree.deployable_uuids[0]}/program", json=PROGRAM)
    assert resp.status == 409
    other = await client.patch(f"/v2/deployables/{tree.deployable_uuids[1]}/program", json=PROGRAM)
    assert other.status == 200
    assert requests(store) == [(IMAGE, "requested")]


@pytest.mark.parametrize("url,status,message", [
    ("/v2/deployables/nope", 400, "Invalid deployable uuid: 'nope' is not a valid UUID"),
    ("/v2/deployables?name=x", 400, 'Unknown argument: "name"'),
    ("/v2/deployables/4cd3925c-04dd-4618-a0ab-c861f6c06803", 404,
     "Deployable 4cd3925c-04dd-4618-a0ab-c861f6c06803 could not be found.")])
async def test_bad_reads(client, tree, url, status, message):
    assert await cyborg_fault(await client.get(url), status) == message


async def test_policy_for_reads(client, tree):
    for url, rule in (("/v2/deployables", "get_all"), (f"/v2/deployables/{tree.deployable_uuids[0]}", "get_one")):
        resp = await client.get(url, headers=MEMBER)
        assert (await cyborg_fault(resp, 403)).endswith(f"cyborg:deployable:{rule}")
        resp = await client.get(url, headers=dict(MEMBER, **{"X-Roles": "manager"}))
        assert resp.status == 200

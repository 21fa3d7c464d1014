"""/v2/deployables: list, show, attributes_list, links, program requests, their outcome and errors."""

import json

import pytest
from cyborg_errors import cyborg_fault
from factories import add_device, add_profile
from factories import programming_app, programming_host  # noqa: F401 (the fixtures app, host)
from sqlmodel import select

from rayborg.drivers.base import HostReport
from rayborg.drivers.registry import HostDrivers
from rayborg.store import arq_state
from rayborg.store.host_reports import apply_report
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
async def test_program_answers_the_programmed_deployable(client, store, tree, path):
    uuid = tree.deployable_uuids[0]
    before = await (await client.get(f"/v2/deployables/{uuid}")).json()
    assert (before["bitstream_id"], before["program_status"], before["program_image_uuid"]) == (None, None, None)
    resp = await client.patch(f"/v2/deployables/{uuid}{path.format(uuid=uuid)}", json=PROGRAM)
    assert resp.status == 200
    body = await resp.json()
    assert body["uuid"] == uuid and body["bitstream_id"] == IMAGE
    assert (body["program_status"], body["program_image_uuid"], body["program_error"]) == ("done", IMAGE, None)
    assert await (await client.get(f"/v2/deployables/{uuid}")).json() == body
    assert requests(store) == [(IMAGE, "done")]


async def test_a_failed_programming_is_an_error_naming_the_reason(client, store, tree, host):
    uuid = tree.deployable_uuids[0]
    host.error = "fpgaconf: exit code 3 (cannot open FME)"
    resp = await client.patch(f"/v2/deployables/{uuid}/program", json=PROGRAM)
    message = await cyborg_fault(resp, 500)
    assert message == f"FPGA programming of deployable {uuid} with image {IMAGE} failed: {host.error}"
    shown = await (await client.get(f"/v2/deployables/{uuid}")).json()
    assert (shown["bitstream_id"], shown["program_status"], shown["program_error"]) == (None, "failed", host.error)


async def test_programming_longer_than_program_wait_is_202_and_its_outcome_readable_later(
        client, store, tree, host, settings):
    uuid, other = tree.deployable_uuids
    settings.program_wait = 0.1
    host.hold.clear()  # the tool runs until the test lets it finish
    resp = await client.patch(f"/v2/deployables/{uuid}/program", json=PROGRAM)
    assert resp.status == 202
    body = await resp.json()
    assert (body["uuid"], body["bitstream_id"], body["program_status"]) == (uuid, None, "programming")
    # one programming per deployable at a time; another deployable is not held up
    again = await client.patch(f"/v2/deployables/{uuid}/program", json=PROGRAM)
    assert "is already being programmed with image" in await cyborg_fault(again, 409)
    assert (await client.patch(f"/v2/deployables/{other}/program", json=PROGRAM)).status == 202
    host.hold.set()
    await host.drain()
    for dep in (uuid, other):
        shown = await (await client.get(f"/v2/deployables/{dep}")).json()
        assert (shown["bitstream_id"], shown["program_status"], shown["program_error"]) == (IMAGE, "done", None)
    listed = (await (await client.get("/v2/deployables")).json())["deployables"]
    assert [d["program_status"] for d in listed] == ["done", "done"]
    assert (await client.patch(f"/v2/deployables/{uuid}/program", json=PROGRAM)).status == 200


async def test_without_actors_programming_is_503_and_records_nothing(aiohttp_client, settings, store, tree):
    from rayborg.api.app import create_app

    client = await aiohttp_client(create_app(settings, store))  # --no-actors: no programmer
    resp = await client.patch(f"/v2/deployables/{tree.deployable_uuids[0]}/program", json=PROGRAM)
    assert "--no-actors" in await cyborg_fault(resp, 503)
    assert requests(store) == []


async def test_stub_devices_are_not_listed(client, store):
    """A stub device (its management stack not loaded: Intel FPGA without fpga/) is not stored."""
    body = HostDrivers("h1", drivers=["fake"], options={"fake": {"spec": "fpga:2"}}).discover().model_dump()
    body["devices"][1]["stub"] = True
    store.transact(apply_report, HostReport.model_validate(body))
    deps = (await (await client.get("/v2/deployables")).json())["deployables"]
    assert [d["name"] for d in deps] == ["h1_fake_fpga_0"]


async def test_program_by_an_admin_records_the_project(client, store, tree):
    resp = await client.patch(f"/v2/deployables/{tree.deployable_uuids[0]}/program", json=PROGRAM,
                              headers={"X-User-Id": "a", "X-Project-Id": "p9", "X-Roles": "admin"})
    assert resp.status == 200, await resp.text()
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
    assert requests(store) == [(IMAGE, "done")]


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

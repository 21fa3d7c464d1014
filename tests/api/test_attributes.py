"""/v2/attributes: list and filters, show, create (bare and wrapped), delete, policy, bad input."""

import json

import pytest
from cyborg_errors import cyborg_fault
from factories import add_device
from sqlmodel import select

from rayborg.store.tables import Attribute

MEMBER = {"X-User-Id": "u", "X-Project-Id": "p1", "X-Roles": "member"}
ADMIN = {"X-User-Id": "a", "X-Project-Id": "p1", "X-Roles": "admin"}


@pytest.fixture
def tree(store):
    return add_device(store, deployables=2, traits=("CUSTOM_A",))


def count(store) -> int:
    return store.query(lambda s: len(list(s.exec(select(Attribute)))))


async def test_list_filters_and_show(client, tree):
    attrs = (await (await client.get("/v2/attributes")).json())["attributes"]
    assert len(attrs) == 4
    dep = tree.deployable_ids[1]
    mine = (await (await client.get(f"/v2/attributes?deployable_id={dep}")).json())["attributes"]
    assert {(a["key"], a["value"]) for a in mine} == {("rc", "FPGA"), ("trait0", "CUSTOM_A")}
    rc = (await (await client.get(f"/v2/attributes?deployable_id={dep}&key=rc")).json())["attributes"]
    assert [a["value"] for a in rc] == ["FPGA"]
    shown = await (await client.get(f"/v2/attributes/{rc[0]['uuid']}")).json()
    assert shown == rc[0]
    assert set(shown) == {"uuid", "deployable_id", "key", "value", "created_at", "updated_at", "links"}


@pytest.mark.parametrize("wrap", [False, True])
async def test_create_and_delete(client, store, tree, wrap):
    body = {"deployable_id": tree.deployable_ids[0], "key": "phys_net", "value": "physnet1"}
    resp = await client.post("/v2/attributes", json={"attribute": body} if wrap else body)
    assert resp.status == 201
    created = await resp.json()
    assert created["key"] == "phys_net" and created["deployable_id"] == tree.deployable_ids[0]
    assert count(store) == 5
    resp = await client.delete(f"/v2/attributes/{created['uuid']}")
    assert resp.status == 204 and count(store) == 4
    assert (await client.delete(f"/v2/attributes/{created['uuid']}")).status == 404


@pytest.mark.parametrize("body", [
    {}, {"deployable_id": "1", "key": "k", "value": "v"}, {"deployable_id": 999, "key": "k", "value": "v"},
    {"deployable_id": 1, "key": "", "value": "v"}, {"deployable_id": 1, "key": "k" * 256, "value": "v"},
    {"deployable_id": 1, "key": "k", "value": "v", "colour": "red"}, [{"deployable_id": 1}],
    {"deployable_id": True, "key": "k", "value": "v"}, {"attribute": {"deployable_id": 1}},
    {"deployable_id": 2**31, "key": "k", "value": "v"}, {"deployable_id": 2**70, "key": "k", "value": "v"},
    {"deployable_id": 1, "key": "k\x00", "value": "v"}, {"deployable_id": 1, "key": "k", "value": "v\x00"},
    {"deployable_id": 1, "key": "k", "value": "v" * 256}, {"deployable_id": 1, "key": 5, "value": "v"},
    {"attribute": {"deployable_id": 1, "key": "k", "value": "v"}, "extra": 1}, "text", None])
async def test_create_bad_bodies(client, store, tree, body):
    resp = await client.post("/v2/attributes", json=body)
    assert resp.status == 400, await resp.text()
    assert json.loads((await resp.json())["error_message"])["faultcode"] == "Client"
    assert count(store) == 4


@pytest.mark.parametrize("data,content_type,status", [(b"{not json", "application/json", 400),
                                                      (b"<a/>", "text/xml", 415)])
async def test_create_unreadable_bodies(client, store, tree, data, content_type, status):
    resp = await client.post("/v2/attributes", data=data, headers={"Content-Type": content_type})
    await cyborg_fault(resp, status)
    assert count(store) == 4


@pytest.mark.parametrize("url,status,message", [
    ("/v2/attributes?deployable_id=x", 400, "deployable_id must be an integer, got 'x'"),
    ("/v2/attributes?k=1", 400, 'Unknown argument: "k"'),
    (f"/v2/attributes?deployable_id={2**63}", 400,
     f"deployable_id must be between 1 and 2147483647, got {2**63}"),
    ("/v2/attributes?deployable_id=0", 400, "deployable_id must be between 1 and 2147483647, got 0"),
    ("/v2/attributes?key=a%00b", 400, 'Argument "key" must not contain NUL characters'),
    ("/v2/attributes/nope", 400, "Invalid attribute uuid: 'nope' is not a valid UUID"),
    ("/v2/attributes/4cd3925c-04dd-4618-a0ab-c861f6c06803", 404,
     "Attribute 4cd3925c-04dd-4618-a0ab-c861f6c06803 could not be found.")])
async def test_bad_reads(client, tree, url, status, message):
    assert await cyborg_fault(await client.get(url), status) == message


async def test_policy(client, store, tree):
    body = {"deployable_id": tree.deployable_ids[0], "key": "k", "value": "v"}
    existing = (await (await client.get("/v2/attributes")).json())["attributes"][0]["uuid"]
    for method, url, kw, rule, ok in (("GET", "/v2/attributes", {}, "get_all", 200),
                                      ("GET", f"/v2/attributes/{existing}", {}, "get_one", 200),
                                      ("POST", "/v2/attributes", {"json": body}, "create", 201),
                                      ("DELETE", f"/v2/attributes/{existing}", {}, "delete", 204)):
        before = count(store)
        resp = await client.request(method, url, headers=MEMBER, **kw)
        assert resp.status == 403
        assert json.loads((await resp.json())["error_message"])["faultstring"].endswith(f"cyborg:attribute:{rule}")
        # a project manager may read but not write; an admin may do both
        manager = await client.request(method, url, headers=dict(MEMBER, **{"X-Roles": "manager"}), **kw)
        assert manager.status == (ok if method == "GET" else 403)
        assert count(store) == before
        assert (await client.request(method, url, headers=ADMIN, **kw)).status == ok
    assert count(store) == 4  # one created, one deleted

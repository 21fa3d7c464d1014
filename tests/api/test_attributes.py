"""/v2/attributes: list and filters, show, create (bare and wrapped), delete, policy, bad input."""

import json

import pytest
from sqlmodel import select

from factories import add_device
from rayborg.store.tables import Attribute

MEMBER = {"X-User-Id": "u", "X-Project-Id": "p1", "X-Roles": "member"}


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
    {"deployable_id": True, "key": "k", "value": "v"}, {"attribute": {"deployable_id": 1}}])
async def test_create_bad_bodies(client, store, tree, body):
    resp = await client.post("/v2/attributes", json=body)
    assert resp.status == 400, await resp.text()
    assert json.loads((await resp.json())["error_message"])["faultcode"] == "Client"
    assert count(store) == 4


@pytest.mark.parametrize("url,status", [("/v2/attributes?deployable_id=x", 400), ("/v2/attributes?k=1", 400),
                                        ("/v2/attributes/nope", 400),
                                        ("/v2/attributes/4cd3925c-04dd-4618-a0ab-c861f6c06803", 404)])
async def test_bad_reads(client, tree, url, status):
    assert (await client.get(url)).status == status


async def test_policy(client, store, tree):
    body = {"deployable_id": tree.deployable_ids[0], "key": "k", "value": "v"}
    for method, url, kw, rule in (("GET", "/v2/attributes", {}, "get_all"),
                                  ("POST", "/v2/attributes", {"json": body}, "create")):
        resp = await client.request(method, url, headers=MEMBER, **kw)
        assert resp.status == 403
        assert json.loads((await resp.json())["error_message"])["faultstring"].endswith(f"cyborg:attribute:{rule}")
    assert count(store) == 4

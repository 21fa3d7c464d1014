"""The 2023.1 per-deployable attribute API, /v2/deployable/{uuid}/attribute[/{uuid_or_key}] (and its plural
alias): list, show by uuid or key, create several (all or none), update, delete one or all; bad input is
a 4xx in Cyborg's body with nothing written; rc/traitN writes mark the deployable for a Placement push
and nudge PlacementSync. SQLite and PostgreSQL (the `store` fixture)."""

from __future__ import annotations

import json
import uuid

import pytest
from cyborg_errors import cyborg_fault
from factories import add_device
from sqlmodel import select

from rayborg.api.app_keys import PLACEMENT_SYNC
from rayborg.store.tables import AttachHandle, Attribute, Deployable

SPELLINGS = {"singular": ("deployable", "attribute"), "plural": ("deployables", "attributes")}


@pytest.fixture(params=list(SPELLINGS))
def url(request):
    dep, attr = SPELLINGS[request.param]
    return lambda dep_uuid, tail="": f"/v2/{dep}/{dep_uuid}/{attr}" + (f"/{tail}" if tail else "")


@pytest.fixture
def tree(store):
    return add_device(store, deployables=2, traits=("CUSTOM_A",))


def rows(store, dep_id: int | None = None) -> dict[str, tuple[str, str]]:
    """key -> (value, source) of one deployable's attributes (or all attributes, keyed by deployable)."""
    def read(s):
        query = select(Attribute).order_by(Attribute.id)
        if dep_id is not None:
            query = query.where(Attribute.deployable_id == dep_id)
        return {a.key if dep_id is not None else (a.deployable_id, a.key): (a.value, a.source) for a in s.exec(query)}
    return store.query(read)


def dirty(store, dep_id: int) -> bool:
    return store.query(lambda s: s.get(Deployable, dep_id).placement_dirty)


def clean(store) -> None:
    def run(s):
        for dep in s.exec(select(Deployable)):
            dep.placement_dirty = False
    store.transact(run)


async def test_lifecycle(client, store, tree, url):
    dep, dep_id = tree.deployable_uuids[0], tree.deployable_ids[0]
    resp = await client.post(url(dep), json=[{"key": "phys_net", "value": "physnet1"},
                                             {"key": "function", "value": "crypto"}])
    assert resp.status == 204 and await resp.read() == b""
    assert rows(store, dep_id) == {"rc": ("FPGA", "driver"), "trait0": ("CUSTOM_A", "driver"),
                                   "phys_net": ("physnet1", "operator"), "function": ("crypto", "operator")}
    assert len(rows(store, tree.deployable_ids[1])) == 2  # the other deployable is untouched

    listed = (await (await client.get(url(dep))).json())["attributes"]
    assert [(a["key"], a["value"]) for a in listed] == [("rc", "FPGA"), ("trait0", "CUSTOM_A"),
                                                        ("phys_net", "physnet1"), ("function", "crypto")]
    assert all(set(a) == {"key", "value", "uuid"} for a in listed)
    phys = next(a for a in listed if a["key"] == "phys_net")

    by_key = (await (await client.get(url(dep, "phys_net"))).json())["attribute"]
    by_uuid = await (await client.get(url(dep, phys["uuid"]))).json()
    assert by_uuid == {"attribute": by_key}
    assert set(by_key) == {"key", "value", "uuid", "created_at", "updated_at"}
    assert (by_key["key"], by_key["value"], by_key["uuid"]) == ("phys_net", "physnet1", phys["uuid"])
    # an upper-case uuid is the same uuid
    assert (await client.get(url(dep, phys["uuid"].upper()))).status == 200
    # the attribute is the deployable's own: another deployable does not have it
    await cyborg_fault(await client.get(url(tree.deployable_uuids[1], phys["uuid"])), 404)

    resp = await client.put(url(dep, phys["uuid"]), json={"value": "physnet2"})
    assert resp.status == 204
    assert rows(store, dep_id)["phys_net"] == ("physnet2", "operator")
    # the flat API and the deployable's attributes_list show what the operator wrote
    flat = (await (await client.get(f"/v2/attributes/{phys['uuid']}")).json())
    assert flat["value"] == "physnet2" and flat["deployable_id"] == dep_id
    shown = await (await client.get(f"/v2/deployables/{dep}")).json()
    assert {"phys_net": "physnet2"} in json.loads(shown["attributes_list"])

    assert (await client.delete(url(dep, "phys_net"))).status == 204
    await cyborg_fault(await client.get(url(dep, "phys_net")), 404)
    await cyborg_fault(await client.delete(url(dep, phys["uuid"])), 404)
    assert set(rows(store, dep_id)) == {"rc", "trait0", "function"}

    assert (await client.delete(url(dep))).status == 204
    assert rows(store, dep_id) == {}
    assert (await (await client.get(url(dep))).json()) == {"attributes": []}
    assert len(rows(store, tree.deployable_ids[1])) == 2


async def test_put_on_a_driver_row_makes_it_the_operators(client, store, tree, url):
    dep, dep_id = tree.deployable_uuids[0], tree.deployable_ids[0]
    assert (await client.put(url(dep, "trait0"), json={"value": "CUSTOM_B"})).status == 204
    assert rows(store, dep_id)["trait0"] == ("CUSTOM_B", "operator")
    # the same value again is a no-op that still answers 204
    clean(store)
    assert (await client.put(url(dep, "trait0"), json={"value": "CUSTOM_B"})).status == 204
    assert not dirty(store, dep_id)


async def test_uuid_shaped_key_is_found_by_key(client, store, tree, url):
    dep, key = tree.deployable_uuids[0], str(uuid.uuid4())
    assert (await client.post(url(dep), json=[{"key": key, "value": "v"}])).status == 204
    assert (await (await client.get(url(dep, key))).json())["attribute"]["value"] == "v"


@pytest.mark.parametrize("body", [
    [{"key": "phys_net", "value": "a"}, {"key": "rc", "value": "PGPU"}],    # rc exists already
    [{"key": "phys_net", "value": "a"}, {"key": "phys_net", "value": "b"}],  # twice in the body
])
async def test_duplicate_key_is_409_and_nothing_written(client, store, tree, url, body):
    clean(store)
    before = rows(store)
    fault = await cyborg_fault(await client.post(url(tree.deployable_uuids[0]), json=body), 409)
    assert "rc" in fault or "phys_net" in fault
    assert rows(store) == before and not dirty(store, tree.deployable_ids[0])


@pytest.mark.parametrize("body", [
    {}, [], {"key": "k", "value": "v"}, [{"key": "k"}], [{"value": "v"}], [{"key": "", "value": "v"}],
    [{"key": "k" * 256, "value": "v"}], [{"key": "k", "value": "v" * 256}], [{"key": 5, "value": "v"}],
    [{"key": "k", "value": 5}], [{"key": "k", "value": None}], [{"key": "k", "value": "v", "extra": 1}],
    [{"key": "k\x00", "value": "v"}], [{"key": "ok", "value": "v"}, "text"], "text", None, 5,
    [{"key": "ok", "value": "v"}] * 1001,
    # Placement names: upper-case letters, digits and '_'
    [{"key": "ok", "value": "v"}, {"key": "trait7", "value": "custom_lower"}],
    [{"key": "trait7", "value": ""}], [{"key": "trait7", "value": "CUSTOM_A-B"}],
    [{"key": "trait7", "value": "C" * 256}],
])
async def test_create_bad_bodies_are_400(client, store, tree, url, body):
    before = rows(store)
    await cyborg_fault(await client.post(url(tree.deployable_uuids[0]), json=body), 400)
    assert rows(store) == before


@pytest.mark.parametrize("body", [{}, {"value": 5}, {"value": "v" * 256}, {"value": "v", "key": "k"}, ["v"], "v",
                                  None])
async def test_update_bad_bodies_are_400(client, store, tree, url, body):
    before = rows(store)
    await cyborg_fault(await client.put(url(tree.deployable_uuids[0], "rc"), json=body), 400)
    assert rows(store) == before


async def test_update_with_a_bad_placement_name_is_400(client, store, tree, url):
    clean(store)
    before = rows(store)
    await cyborg_fault(await client.put(url(tree.deployable_uuids[0], "rc"), json={"value": "fpga"}), 400)
    await cyborg_fault(await client.put(url(tree.deployable_uuids[0], "trait0"), json={"value": "A B"}), 400)
    # Placement's alphabet but neither standard (os-traits / os-resource-classes) nor CUSTOM_: Placement
    # would refuse the push long after the answer, so the answer is 400.
    await cyborg_fault(await client.put(url(tree.deployable_uuids[0], "trait0"), json={"value": "HW_NO_SUCH"}), 400)
    await cyborg_fault(await client.put(url(tree.deployable_uuids[0], "rc"), json={"value": "NO_SUCH_RC"}), 400)
    assert rows(store) == before and not dirty(store, tree.deployable_ids[0])
    for key, value in (("trait0", "HW_CPU_X86_AVX2"), ("rc", "PGPU")):  # standard names are fine
        resp = await client.put(url(tree.deployable_uuids[0], key), json={"value": value})
        assert resp.status == 204, await resp.text()


async def test_missing_and_malformed_addresses(client, store, tree, url):
    before = rows(store)
    missing, dep = str(uuid.uuid4()), tree.deployable_uuids[0]
    for method, target, body in (("GET", url(missing), None), ("POST", url(missing), [{"key": "k", "value": "v"}]),
                                 ("DELETE", url(missing), None), ("GET", url(missing, "rc"), None),
                                 ("PUT", url(missing, "rc"), {"value": "FPGA"}), ("DELETE", url(missing, "rc"), None),
                                 ("GET", url(dep, "nope"), None), ("PUT", url(dep, "nope"), {"value": "v"}),
                                 ("DELETE", url(dep, "nope"), None),
                                 ("GET", url(dep, str(uuid.uuid4())), None)):
        fault = await cyborg_fault(await client.request(method, target, json=body), 404)
        assert "could not be found" in fault or "has no attribute" in fault
    for method, target in (("GET", url("not-a-uuid")), ("DELETE", url("not-a-uuid")),
                           ("GET", url("not-a-uuid", "rc"))):
        await cyborg_fault(await client.request(method, target), 400)
    await cyborg_fault(await client.get(url(dep, "a%00b")), 400)
    await cyborg_fault(await client.get(url(dep, "k" * 256)), 400)
    assert rows(store) == before


async def test_rc_cannot_change_while_in_use(client, store, tree, url):
    dep, dep_id = tree.deployable_uuids[0], tree.deployable_ids[0]

    def take(s):
        s.get(AttachHandle, tree.handle_ids[0]).in_use = True
    store.transact(take)
    before = rows(store)
    await cyborg_fault(await client.put(url(dep, "rc"), json={"value": "PGPU"}), 409)
    await cyborg_fault(await client.delete(url(dep, "rc")), 409)
    await cyborg_fault(await client.delete(url(dep)), 409)
    assert rows(store) == before
    # other keys may still change; the free deployable's rc too
    assert (await client.put(url(dep, "trait0"), json={"value": "CUSTOM_B"})).status == 204
    assert (await client.put(url(tree.deployable_uuids[1], "rc"), json={"value": "CUSTOM_X"})).status == 204


class FakeSync:
    """Stands in for the PlacementSync actor handle: counts `nudge.remote()`."""

    def __init__(self):
        self.nudges = 0
        sync = self

        class _Nudge:
            def remote(self):
                sync.nudges += 1
        self.nudge = _Nudge()


async def test_placement_keys_mark_dirty_and_nudge(aiohttp_client, settings, store, tree, url):
    from rayborg.api.app import create_app

    app = create_app(settings, store)
    sync = app[PLACEMENT_SYNC] = FakeSync()
    client = await aiohttp_client(app)
    dep, dep_id = tree.deployable_uuids[0], tree.deployable_ids[0]
    clean(store)
    steps = [  # (method, url, body, placement changes?)
        ("POST", url(dep), [{"key": "phys_net", "value": "physnet1"}], False),
        ("PUT", url(dep, "phys_net"), {"value": "physnet2"}, False),
        ("DELETE", url(dep, "phys_net"), None, False),
        ("POST", url(dep), [{"key": "note", "value": "x"}, {"key": "trait9", "value": "CUSTOM_NIC_PHYSNET1"}], True),
        ("PUT", url(dep, "trait9"), {"value": "CUSTOM_NIC_PHYSNET2"}, True),
        ("DELETE", url(dep, "trait9"), None, True),
        ("PUT", url(dep, "rc"), {"value": "CUSTOM_ACCEL"}, True),
        ("DELETE", url(dep), None, True),
    ]
    for method, target, body, changes in steps:
        nudges = sync.nudges
        resp = await client.request(method, target, json=body)
        assert resp.status == 204, await resp.text()
        assert dirty(store, dep_id) == changes, (method, target)
        assert sync.nudges == nudges + changes, (method, target)
        assert not dirty(store, tree.deployable_ids[1])
        clean(store)


async def test_flat_api_marks_dirty_for_placement_keys(aiohttp_client, settings, store, tree):
    from rayborg.api.app import create_app

    app = create_app(settings, store)
    sync = app[PLACEMENT_SYNC] = FakeSync()
    client = await aiohttp_client(app)
    dep_id = tree.deployable_ids[0]
    clean(store)
    resp = await client.post("/v2/attributes", json={"deployable_id": dep_id, "key": "phys_net", "value": "p"})
    assert resp.status == 201 and not dirty(store, dep_id) and sync.nudges == 0
    resp = await client.post("/v2/attributes", json={"deployable_id": dep_id, "key": "trait5", "value": "CUSTOM_Z"})
    assert resp.status == 201 and dirty(store, dep_id) and sync.nudges == 1
    assert rows(store, dep_id)["trait5"] == ("CUSTOM_Z", "operator")
    clean(store)
    assert (await client.delete(f"/v2/attributes/{(await resp.json())['uuid']}")).status == 204
    assert dirty(store, dep_id) and sync.nudges == 2
    before = rows(store)
    resp = await client.post("/v2/attributes", json={"deployable_id": dep_id, "key": "trait6", "value": "lower"})
    await cyborg_fault(resp, 400)
    assert rows(store) == before


def test_concurrent_creates_of_one_key_are_one_row_and_a_409(store, tree):
    """PostgreSQL runs the two transactions side by side: both pass the duplicate check, the unique
    (deployable, key) constraint refuses the second, which is a ConflictError (409), not a 500."""
    import threading

    from rayborg.store.errors import ConflictError
    from rayborg.store.queries import attributes as queries

    if store.is_sqlite:
        pytest.skip("SQLite has one writer at a time: the check alone decides")
    dep = tree.deployable_uuids[0]
    first_flushed, errors = threading.Event(), []

    def first(session):
        queries.create_for_deployable(session, dep, [("phys_net", "a")])
        first_flushed.set()
        threading.Event().wait(0.5)  # the second now waits on our uncommitted row

    def second():
        first_flushed.wait(5)
        try:
            store.transact(queries.create_for_deployable, dep, [("phys_net", "b")])
        except ConflictError as exc:
            errors.append(exc)

    thread = threading.Thread(target=second)
    thread.start()
    store.transact(first)
    thread.join(10)
    assert len(errors) == 1 and "already has" in str(errors[0])
    assert rows(store, tree.deployable_ids[0])["phys_net"] == ("a", "operator")

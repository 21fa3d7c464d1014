"""The fault tests' oracle, `runtime_helpers.placement_differences`, against the real Placement (no
Ray): it finds every way a host's provider tree can drift from the store, and `make_compute_nodes`
leaves each compute node with nothing under it."""

import uuid

import pytest
from sqlmodel import select

from factories import add_device
from rayborg.actors.placement_client import PlacementClient
from rayborg.actors.placement_push import push
from rayborg.store.placement_state import provider_uuid
from rayborg.store.tables import Deployable, Device
from runtime_helpers import fresh_store, make_compute_nodes, placement_differences, store_matches_placement


@pytest.fixture
def synced(placement_server, tmp_path):
    """A store with two hosts' devices, pushed to Placement, and the two compute nodes."""
    hosts = [f"agree-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    make_compute_nodes(placement_server.url, hosts)
    store = fresh_store(tmp_path)
    add_device(store, hosts[0], deployables=2, traits=("CUSTOM_FPGA_INTEL", "CUSTOM_FPGA_ARRIA10"))
    add_device(store, hosts[1], bus=0x3b, rc="CUSTOM_QAT", traits=())
    client = PlacementClient(placement_server.url)
    assert push(store, client).complete
    assert placement_differences(store, client) == []
    yield store, client, hosts
    store.dispose()


def _rp(store, host: str) -> tuple[str, str]:
    return store.query(lambda s: s.exec(select(Deployable.rp_uuid, Deployable.name).join(Device)
                                        .where(Device.hostname == host).order_by(Deployable.name)).first())


def _only(diffs: list[str], *words: str) -> None:
    assert len(diffs) == 1 and all(w in diffs[0] for w in words), diffs


def test_traits_changed_behind_the_stores_back(synced):
    store, client, hosts = synced
    rp, name = _rp(store, hosts[0])
    client.set_traits(rp, ["OWNER_CYBORG"])
    diffs = placement_differences(store, client)
    assert len(diffs) == 2 and all(name in d for d in diffs)  # against the store and its push record
    assert not store_matches_placement(store, client)


def test_reserved_and_total_are_compared(synced):
    store, client, hosts = synced
    rp, name = _rp(store, hosts[1])
    client.set_inventory(rp, "CUSTOM_QAT", 2, 2)
    assert any("'reserved': 2" in d and name in d for d in placement_differences(store, client))
    client.set_inventory(rp, "CUSTOM_QAT", 3, 0)
    assert any("'total': 3" in d for d in placement_differences(store, client))


def test_a_device_in_maintenance_must_have_everything_reserved(synced):
    store, client, hosts = synced
    rp, name = _rp(store, hosts[1])

    def maintain(session):
        session.exec(select(Device).where(Device.hostname == hosts[1])).one().status = "maintaining"

    store.transact(maintain)
    # The store changed and says so nowhere (not dirty): Placement's reserved=0 is now a difference.
    assert any("'reserved': 0" in d for d in placement_differences(store, client))
    store.transact(lambda s: setattr(s.exec(select(Deployable).where(Deployable.rp_uuid == rp)).one(),
                                     "placement_dirty", True))
    _only(placement_differences(store, client), "not pushed yet")  # dirty: still converging
    assert push(store, client).complete
    assert placement_differences(store, client) == []
    assert client.get_inventories(rp)[1]["CUSTOM_QAT"]["reserved"] == 2


def test_orphans_in_the_tree_and_outside_it(synced, placement_server):
    store, client, hosts = synced
    compute = provider_uuid(hosts[0])
    child = client._request("POST", "/resource_providers", {"name": f"{hosts[0]}_left_over",
                                                            "parent_provider_uuid": compute}).json()
    _only(placement_differences(store, client), "orphan", f"{hosts[0]}_left_over")
    client.delete_provider(child["uuid"])
    loose = client._request("POST", "/resource_providers", {"name": f"{hosts[1]}_no_parent"}).json()
    _only(placement_differences(store, client), "orphan", f"{hosts[1]}_no_parent")
    # make_compute_nodes clears both kinds away.
    make_compute_nodes(placement_server.url, hosts)
    assert client.get_provider(loose["uuid"]) is None
    assert [p["uuid"] for p in client.providers_in_tree(compute)] == [compute]  # the device RPs too


def test_missing_and_misparented_providers(synced):
    store, client, hosts = synced
    rp, name = _rp(store, hosts[0])
    resp = client._request("PUT", f"/resource_providers/{rp}",
                           {"name": name, "parent_provider_uuid": provider_uuid(hosts[1])})
    assert resp.status_code == 200, resp.text
    diffs = placement_differences(store, client)
    # Found by its name outside its host's tree, with the wrong parent; and an orphan in the other tree.
    assert any(hosts[0] in d and "parent_uuid" in d for d in diffs)
    assert any(d.startswith(f"{hosts[1]}: orphan RP {name}") for d in diffs)
    client.delete_provider(rp)
    _only(placement_differences(store, client), "missing", name)


def test_a_stale_push_record_is_a_difference(synced):
    store, client, hosts = synced
    rp, name = _rp(store, hosts[1])

    def stale(session):
        dep = session.exec(select(Deployable).where(Deployable.rp_uuid == rp)).one()
        dep.placement_state = {**dep.placement_state, "total": 7}

    store.transact(stale)
    _only(placement_differences(store, client), "recorded as", name)


def test_a_host_without_a_compute_node(placement_server, tmp_path):
    store = fresh_store(tmp_path)
    add_device(store, f"nowhere-{uuid.uuid4().hex[:8]}")
    store.transact(lambda s: setattr(s.exec(select(Deployable)).one(), "placement_dirty", False))
    _only(placement_differences(store, PlacementClient(placement_server.url)), "no compute node")

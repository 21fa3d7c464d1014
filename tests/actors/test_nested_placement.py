"""Nested FPGA deployables in the real Placement: the card's RP under the compute node, one RP per PR
region under the card's, inventory on the regions only; Placement's allocation candidates pick a
region by its traits; a card that goes is deleted children first; nothing changed, nothing written."""

from __future__ import annotations

import pytest
from sqlmodel import select

from rayborg.actors.placement_push import push
from rayborg.drivers import discover_host
from rayborg.drivers.sysfs_tree import FIXTURE_TREES, build_tree
from rayborg.store.host_reports import apply_report
from rayborg.store.placement_state import provider_uuid
from rayborg.store.tables import Deployable, PlacementTombstone

COMPAT = "CUSTOM_FPGA_REGION_INTEL_9346116D5B5A5BD3AB1B1B7AB25C7CD8"
EMPTY = "CUSTOM_FPGA_FUNCTION_ID_INTEL_00000000000000000000000000000000"


@pytest.fixture
def root(tmp_path):
    return build_tree(tmp_path / "sys", FIXTURE_TREES / "intel_fpga" / "dfl_regions.json")


def names(host):
    card = f"{host}_0000_3b_00_0"
    return card, f"{card}_region0", f"{card}_region1", f"{host}_0000_af_00_0"


def tree(placement, host) -> dict[str, dict]:
    resp = placement._request("GET", f"/resource_providers?in_tree={provider_uuid(host)}")
    assert resp.status_code == 200, resp.text
    return {rp["name"]: rp for rp in resp.json()["resource_providers"]}


def test_regions_are_nested_providers_under_the_card(store, placement, host, root):
    store.transact(apply_report, discover_host(host, root, drivers=["intel_fpga"]))
    result = push(store, placement, host)
    assert result.complete and result.pushed == 4, result
    card, r0, r1, single = names(host)
    rps = tree(placement, host)
    assert set(rps) == {host, card, r0, r1, single}
    compute = provider_uuid(host)
    assert rps[card]["parent_provider_uuid"] == compute and rps[single]["parent_provider_uuid"] == compute
    for region in (r0, r1):
        rp = rps[region]
        assert rp["parent_provider_uuid"] == rps[card]["uuid"] and rp["root_provider_uuid"] == compute
        assert placement.get_inventories(rp["uuid"])[1]["FPGA"]["total"] == 1
        assert COMPAT in placement.get_traits(rp["uuid"])[1]
    # the card (static region) holds no accelerators of its own
    assert placement.get_inventories(rps[card]["uuid"])[1] == {}
    assert sorted(placement.get_traits(rps[card]["uuid"])[1]) == [
        "CUSTOM_FPGA_INTEL", "CUSTOM_FPGA_INTEL_PAC_D5005", "OWNER_CYBORG"]
    # stored RP uuids are the ones in Placement
    stored = store.query(lambda s: {d.name: d.rp_uuid for d in s.exec(select(Deployable))})
    assert {n: rps[n]["uuid"] for n in (card, r0, r1, single)} == stored

    # Placement schedules onto a region: the empty region is the one candidate for its traits
    resp = placement._request(
        "GET", f"/allocation_candidates?resources=FPGA:1&required={COMPAT},{EMPTY}&in_tree={compute}")
    assert resp.status_code == 200, resp.text
    candidates = [list(a["allocations"]) for a in resp.json()["allocation_requests"]]
    assert candidates == [[rps[r1]["uuid"]]]

    # nothing changed: nothing written
    writes = placement.writes
    store.transact(apply_report, discover_host(host, root, drivers=["intel_fpga"]))
    assert push(store, placement, host).pushed == 0 and placement.writes == writes


def test_a_card_that_goes_is_deleted_children_first(store, placement, host, root):
    store.transact(apply_report, discover_host(host, root, drivers=["intel_fpga"]))
    assert push(store, placement, host).complete
    card, r0, r1, single = names(host)
    for fn in ("0000:3b:00.0", "0000:3b:00.1", "0000:3b:00.2"):
        (root / "bus/pci/devices" / fn).unlink()
    store.transact(apply_report, discover_host(host, root, drivers=["intel_fpga"]))
    result = push(store, placement, host)
    assert result.complete and result.deleted == 3, result
    assert set(tree(placement, host)) == {host, single}
    assert store.query(lambda s: s.exec(select(PlacementTombstone)).all()) == []


def test_tombstones_in_any_order_still_all_go(store, placement, host, root):
    """Even when the card's tombstone is the newest (it would be deleted first), its regions' RPs
    go first on the retry and the card's after."""
    store.transact(apply_report, discover_host(host, root, drivers=["intel_fpga"]))
    assert push(store, placement, host).complete
    card, r0, r1, _ = names(host)

    def tombstone_card_last(session):
        deps = {d.name: d for d in session.exec(select(Deployable))}
        for name in (r0, r1, card):
            session.add(PlacementTombstone(rp_uuid=deps[name].rp_uuid, hostname=host))
            session.flush()
        for name in (r0, r1, card):  # as if the report that removed them had been applied
            session.delete(deps[name])
        session.flush()

    # the reverse-id order of deletion would try the card first: refused (it has children), retried
    store.transact(tombstone_card_last)
    result = push(store, placement, host)
    assert result.deleted == 3 and result.complete, result
    assert card not in tree(placement, host)


def test_the_oracle_knows_nested_trees(store, placement, host, root):
    """`placement_differences` (the fault tests' oracle) takes a synced nested host as agreeing, and
    finds a region's RP missing, hanging under the wrong parent (the other region, the compute node),
    or inventory on the card."""
    from runtime_helpers import placement_differences

    store.transact(apply_report, discover_host(host, root, drivers=["intel_fpga"]))
    assert push(store, placement, host).complete
    assert placement_differences(store, placement) == []
    card, r0, r1, _ = names(host)
    rps = tree(placement, host)
    region = rps[r1]["uuid"]
    inventory, traits = placement.get_inventories(region)[1]["FPGA"], placement.get_traits(region)[1]

    def recreate_under(parent: str) -> None:
        placement.delete_provider(region)
        placement.create_provider(region, r1, parent)
        placement.set_inventory(region, "FPGA", inventory["total"], inventory["reserved"])
        placement.set_traits(region, traits)

    placement.delete_provider(region)
    diffs = placement_differences(store, placement)
    assert diffs == [f"{host}: RP {r1} missing"], diffs
    for wrong in (rps[r0]["uuid"], provider_uuid(host)):
        recreate_under(wrong)
        diffs = placement_differences(store, placement)
        # against the store and against its push record, both about the parent
        assert len(diffs) == 2 and all(r1 in d and f"'parent_uuid': '{wrong}'" in d for d in diffs), diffs
    recreate_under(rps[card]["uuid"])
    assert placement_differences(store, placement) == []

    placement.set_inventory(rps[card]["uuid"], "FPGA", 1, 0)  # the card holds no accelerators
    diffs = placement_differences(store, placement)
    assert len(diffs) == 2 and all(card in d and "'total': 1" in d for d in diffs), diffs
    placement.set_inventory(rps[card]["uuid"], "FPGA", 0, 0)
    assert placement_differences(store, placement) == []


# ---- with the actors: a bind on a region programs that region, Placement follows -------------

NEW_AFU = "f7df405cbd7acf7222f144b0b93acd18"
IMAGE = "5b3a0d2e-7c1f-4e8a-9b6d-2f4c8e1a7d30"


@pytest.fixture
def nested_runtime(ray_cluster, placement_server, nova, tmp_path):
    import json

    from rayborg.actors.runtime_config import RuntimeConfig
    from runtime_helpers import (fresh_store, kill_runtime, make_compute_nodes, nested_fpga_card,
                                 start_runtime, wait_for)

    store = fresh_store(tmp_path)
    make_compute_nodes(placement_server.url, ["host-a"])
    root, _, tool, record = nested_fpga_card(tmp_path)
    images = tmp_path / "bitstreams"
    images.mkdir()
    (images / "aes.gbs").write_text(json.dumps({"afu_id": NEW_AFU}))
    (images / "aes.gbs.json").write_text(json.dumps({
        "bs-uuid": IMAGE, "bs-name": "aes", "vendor": "Intel", "board": "PAC_D5005", "version": "1.0",
        "region_uuid": "9346116d5b5a5bd3ab1b1b7ab25c7cd8", "function_uuid": NEW_AFU, "function_name": "aes"}))
    config = RuntimeConfig(
        database_url=store.url, placement_url=placement_server.url, nova_url=nova.url, report_interval=0.5,
        retry_interval=0.2,
        host_overrides={"host-a": {"drivers": ["intel_fpga"], "sysfs_root": str(root), "driver_options": {
            "intel_fpga": {"tool": str(tool)}, "bitstreams": {"dir": str(images)}}},
            "host-b": {"drivers": []}, "host-c": {"drivers": []}})
    start_runtime(config)
    wait_for(lambda: store.query(lambda s: len(list(s.exec(select(Deployable))))) == 4, what="nested deployables")
    yield store, config, record
    kill_runtime()
    store.dispose()


@pytest.mark.xdist_group("ray")
@pytest.mark.slow
def test_a_bind_with_a_bitstream_programs_the_chosen_region_only(nested_runtime, placement):
    import json

    import ray
    from factories import add_profile

    from rayborg.actors.binder import binder_index
    from rayborg.actors.runtime_config import NAMESPACE, binder_name
    from rayborg.store import arq_state
    from runtime_helpers import new_instance, wait_for

    store, config, record = nested_runtime
    card, r0, r1, _ = names("host-a")
    deps = lambda: store.query(lambda s: {d.name: d for d in s.exec(select(Deployable))})  # noqa: E731
    # the runtime's own push: regions under the card under the compute node
    wait_for(lambda: set(tree(placement, "host-a")) == {"host-a", card, r0, r1, names("host-a")[3]},
             timeout=30, what="the nested providers in Placement")
    rps = tree(placement, "host-a")
    assert rps[r1]["parent_provider_uuid"] == rps[card]["uuid"] == deps()[card].rp_uuid

    add_profile(store, "aes", [{"resources:FPGA": "1", "accel:bitstream_id": IMAGE}])
    arq = store.transact(arq_state.create_arqs, "aes", "proj")[0].uuid
    instance = new_instance()
    store.transact(arq_state.start_bind, {arq: arq_state.BindTarget("host-a", deps()[r1].rp_uuid, instance, "proj")})
    binder = ray.get_actor(binder_name(binder_index(instance, config.binder_count)), namespace=NAMESPACE)
    assert ray.get(binder.bind.remote([arq]), timeout=60) == {arq: "Bound"}
    # fpgaconf ran once, on the VF carrying region 1's port
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert [c[c.index("--function") + 1] for c in calls] == ["0x2"]
    new_trait = f"CUSTOM_FPGA_FUNCTION_ID_INTEL_{NEW_AFU.upper()}"
    wait_for(lambda: new_trait in placement.get_traits(rps[r1]["uuid"])[1], timeout=30,
             what="region 1's new function in Placement")
    now = deps()
    assert now[r1].bitstream_id == IMAGE and now[r0].bitstream_id is None and now[card].bitstream_id is None
    assert new_trait not in placement.get_traits(rps[r0]["uuid"])[1]

"""A nested FPGA (the whole card with one deployable per PR region) in the store, on both databases:
parent_id/root_id, handles on the regions only, identities kept across re-reports, what Placement
should show of each (the regions under the card's RP, inventory on the regions), and removal."""

from __future__ import annotations

import pytest
from sqlmodel import select

from rayborg.drivers import discover_host
from rayborg.drivers.sysfs_tree import FIXTURE_TREES, build_tree
from rayborg.store.host_reports import apply_report
from rayborg.store.placement_marks import dirty, to_push
from rayborg.store.placement_state import parent_ids
from rayborg.store.tables import AttachHandle, Deployable, PlacementTombstone

PARENT, REGION0, REGION1 = "node1_0000_3b_00_0", "node1_0000_3b_00_0_region0", "node1_0000_3b_00_0_region1"
SINGLE = "node1_0000_af_00_0"
COMPUTE_NODE = "99999999-2222-4333-8444-555555555555"
AFU1 = "devices/pci0000:3b/0000:3b:00.2/fpga_region/region4/dfl-port.1/afu_id"


@pytest.fixture
def root(tmp_path):
    return build_tree(tmp_path / "sys", FIXTURE_TREES / "intel_fpga" / "dfl_regions.json")


def report(root):
    return discover_host("node1", root, drivers=["intel_fpga"])


def rows(session) -> dict[str, dict]:
    out = {}
    for dep in session.exec(select(Deployable)):
        handles = session.exec(select(AttachHandle).where(AttachHandle.deployable_id == dep.id)).all()
        out[dep.name] = {"id": dep.id, "uuid": dep.uuid, "parent_id": dep.parent_id, "root_id": dep.root_id,
                         "num": dep.num_accelerators, "rp_uuid": dep.rp_uuid, "dirty": dep.placement_dirty,
                         "handles": sorted(h.attach_info for h in handles)}
    return out


def clean(session) -> None:
    for dep in session.exec(select(Deployable)):
        dep.placement_dirty = False


def test_regions_are_children_of_the_card(store, root):
    diff = store.transact(apply_report, report(root))
    assert sorted(diff.added) == sorted([PARENT, REGION0, REGION1, SINGLE])
    r = store.query(rows)
    parent, r0, r1, single = r[PARENT], r[REGION0], r[REGION1], r[SINGLE]
    assert parent["parent_id"] is None and parent["root_id"] == parent["id"] and parent["num"] == 0
    assert parent["handles"] == []
    for region in (r0, r1):
        assert region["parent_id"] == parent["id"] and region["root_id"] == parent["id"] and region["num"] == 1
    assert r0["handles"] == ['{"bus": "3b", "device": "00", "domain": "0000", "function": "1"}']
    assert r1["handles"] == ['{"bus": "3b", "device": "00", "domain": "0000", "function": "2"}']
    # the single-region card is one root deployable, as always
    assert single["parent_id"] is None and single["root_id"] == single["id"] and single["num"] == 1


def test_placement_view_nests_regions_under_the_card(store, root):
    store.transact(apply_report, report(root))
    r = store.query(rows)
    assert store.query(parent_ids, [r[REGION0]["id"], r[PARENT]["id"]]) == {
        r[REGION0]["id"]: r[PARENT]["id"], r[PARENT]["id"]: None}
    card, _ = store.query(to_push, r[PARENT]["id"], COMPUTE_NODE)
    region, _ = store.query(to_push, r[REGION1]["id"], COMPUTE_NODE)
    assert (card.parent_uuid, card.total, card.resource_class) == (COMPUTE_NODE, 0, "FPGA")
    assert (region.parent_uuid, region.total, region.uuid) == (r[PARENT]["rp_uuid"], 1, r[REGION1]["rp_uuid"])
    assert "CUSTOM_FPGA_REGION_INTEL_9346116D5B5A5BD3AB1B1B7AB25C7CD8" in region.traits
    assert not any(t.startswith("CUSTOM_FPGA_REGION") for t in card.traits)


def test_a_re_report_keeps_identities_and_marks_only_the_changed_region(store, root):
    store.transact(apply_report, report(root))
    before = store.query(rows)
    store.transact(clean)
    assert store.transact(apply_report, report(root)).empty
    (root / AFU1).write_text("f7df405cbd7acf7222f144b0b93acd18\n")  # region 1 got another function
    diff = store.transact(apply_report, report(root))
    assert diff.changed == [REGION1] and not diff.added and not diff.removed
    after = store.query(rows)
    assert {n: (d["id"], d["uuid"], d["parent_id"], d["root_id"]) for n, d in after.items()} == \
        {n: (d["id"], d["uuid"], d["parent_id"], d["root_id"]) for n, d in before.items()}
    assert [name for name, d in after.items() if d["dirty"]] == [REGION1]
    assert [dep_id for dep_id, _ in store.query(dirty)] == [after[REGION1]["id"]]


def test_a_card_that_goes_tombstones_the_card_and_its_regions(store, root):
    store.transact(apply_report, report(root))
    r = store.query(rows)
    for path in (root / "bus/pci/devices/0000:3b:00.0", root / "bus/pci/devices/0000:3b:00.1",
                 root / "bus/pci/devices/0000:3b:00.2"):
        path.unlink()
    diff = store.transact(apply_report, report(root))
    assert sorted(diff.removed) == sorted([PARENT, REGION0, REGION1]) and diff.devices_removed == 1
    assert set(store.query(rows)) == {SINGLE}
    tombs = store.query(lambda s: [t.rp_uuid for t in s.exec(select(PlacementTombstone).order_by(PlacementTombstone.id))])
    assert sorted(tombs) == sorted(r[n]["rp_uuid"] for n in (PARENT, REGION0, REGION1))

"""What the operator CLI and the Python API read through the binders' typed methods: deployables
with their holders (claims flagged), ARQs, the summary, and enable/disable by any name."""

from __future__ import annotations

import pytest
from factories import add_device, add_profile

from rayborg.store import arq_state, claims
from rayborg.store.queries import operator

LIMITS = arq_state.AmountLimits(per_group=64, per_profile=8)


def test_reads_show_claims_as_such(store):
    add_profile(store, "one", [{"resources:FPGA": "1"}])
    tree = add_device(store, "host1", handles_per_deployable=1)
    consumer = claims.consumer_uuid("00000002")
    (arq,) = store.transact(claims.start, "one", 1, None, consumer, "p1", LIMITS, ())
    store.transact(arq_state.finish_binds, [arq])
    (row,) = store.query(operator.deployables)
    assert (row["rp_uuid"], row["state"], row["free"]) == (tree.rp_uuids[0], "bound", 0)
    assert row["holders"] == [{"arq": arq, "consumer": consumer, "project_id": "p1", "claim": True}]
    (listed,) = store.query(operator.arqs, "Bound", "host1")
    assert (listed["uuid"], listed["device_profile"], listed["deployable"], listed["claim"]) == (
        arq, "one", row["deployable"], True)
    assert store.query(operator.arqs, "BindFailed") == [] and store.query(operator.arqs, None, "host2") == []
    summary = store.query(operator.summary)
    assert summary["arqs"] == {"Bound": 1} and summary["devices"] == {"FPGA": {"enabled": 1, "total": 1}}


def test_enable_and_disable_by_device_or_deployable(store):
    tree = add_device(store, "host1")
    (row,) = store.query(operator.deployables)
    off = store.transact(operator.set_device_status, row["deployable"], False)
    assert off == {"device_uuid": tree.device_uuid, "host": "host1", "type": "FPGA", "status": "maintaining",
                   "status_reason": None, "changed": True}
    assert store.query(operator.deployables)[0]["state"] == "disabled"
    assert store.transact(operator.set_device_status, tree.device_uuid, True)["changed"] is True
    assert store.transact(operator.set_device_status, tree.deployable_uuids[0], True)["changed"] is False
    with pytest.raises(LookupError, match="no device or deployable named 'nope'"):
        store.transact(operator.set_device_status, "nope", False)


def test_disable_reason_is_kept_shown_and_cleared(store):
    tree = add_device(store, "host1")
    (row,) = store.query(operator.deployables)
    assert (row["status"], row["status_reason"]) == ("enabled", None)
    off = store.transact(operator.set_device_status, tree.device_uuid, False, "fan failure")
    assert (off["status_reason"], off["changed"]) == ("fan failure", True)
    again = store.transact(operator.set_device_status, row["deployable"], False)  # a repeat keeps why
    assert (again["status_reason"], again["changed"]) == ("fan failure", False)
    (row,) = store.query(operator.deployables)
    assert (row["state"], row["status_reason"]) == ("disabled", "fan failure")
    assert store.transact(operator.set_device_status, tree.device_uuid, True)["status_reason"] is None
    assert store.query(operator.deployables)[0]["status_reason"] is None
    with pytest.raises(ValueError, match="at most 255"):
        store.transact(operator.set_device_status, tree.device_uuid, False, "x" * 256)
    assert store.query(operator.deployables)[0]["status"] == "enabled"


def test_deployables_carry_their_latest_programming(store):
    from sqlmodel import select

    from rayborg.store.queries import program_requests
    from rayborg.store.tables import Deployable, ProgramRequest

    tree = add_device(store, "host1", deployables=3)

    def request(session, index: int, image: str) -> str:
        dep = session.exec(select(Deployable).where(Deployable.uuid == tree.deployable_uuids[index])).one()
        row = ProgramRequest(deployable_id=dep.id, image_uuid=image)
        session.add(row)
        session.flush()
        return row.uuid

    first = store.transact(request, 0, "img-1")
    store.transact(program_requests.start, first)
    store.transact(program_requests.finish, first, None)
    failed = store.transact(request, 0, "img-2")  # the latest wins
    store.transact(program_requests.start, failed)
    store.transact(program_requests.finish, failed, "bitstream does not fit")
    running = store.transact(request, 1, "img-3")
    store.transact(program_requests.start, running)
    rows = {r["deployable_uuid"]: r for r in store.query(operator.deployables)}
    got = {i: (rows[u]["program_status"], rows[u]["program_image_uuid"], rows[u]["program_error"])
           for i, u in enumerate(tree.deployable_uuids)}
    assert got == {0: ("failed", "img-2", "bitstream does not fit"), 1: ("programming", "img-3", None),
                   2: (None, None, None)}
    assert rows[tree.deployable_uuids[0]]["program_updated_at"].endswith("+00:00")
    assert rows[tree.deployable_uuids[2]]["program_updated_at"] is None

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
                   "changed": True}
    assert store.query(operator.deployables)[0]["state"] == "disabled"
    assert store.transact(operator.set_device_status, tree.device_uuid, True)["changed"] is True
    assert store.transact(operator.set_device_status, tree.deployable_uuids[0], True)["changed"] is False
    with pytest.raises(LookupError, match="no device or deployable named 'nope'"):
        store.transact(operator.set_device_status, "nope", False)

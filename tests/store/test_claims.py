"""Standalone claims in the store: consumers that name their Ray job, a claim's start as one
standalone bind transaction (bounded like a POST, all or nothing, excluded RPs never chosen), and
the listing and devices the binder and the Python API read."""

from __future__ import annotations

import pytest
from factories import add_device, add_profile

from rayborg.store import arq_state, bind_plan, claims
from rayborg.store.tables import ARQState

LIMITS = arq_state.AmountLimits(per_group=64, per_profile=8)


def test_a_consumer_names_its_job():
    consumer = claims.consumer_uuid("0a0B0c0D")
    assert claims.is_claim(consumer) and claims.claim_job(consumer) == "0a0b0c0d"
    assert claims.claim_job(claims.consumer_uuid(None)) is None and claims.is_claim(claims.consumer_uuid("bad"))
    assert not claims.is_claim("11111111-2222-4333-8444-555555555555")


def test_start_binds_standalone_and_release_deletes(store):
    add_profile(store, "one", [{"resources:FPGA": "1"}])
    tree = add_device(store, "host1", deployables=2, handles_per_deployable=1)
    consumer = claims.consumer_uuid("00000001")
    arqs = store.transact(claims.start, "one", 2, None, consumer, "p1", LIMITS, ())
    assert len(arqs) == 2 and store.query(claims.listing) == {consumer: arqs}
    assert {u for u, _ in store.query(bind_plan.in_flight)} == set(arqs)  # the binder's to finish
    assert store.transact(arq_state.finish_binds, arqs) == {a: "Bound" for a in arqs}
    devices = store.query(claims.devices, consumer)
    assert [d["arq"] for d in devices] == arqs and {d["rp_uuid"] for d in devices} == set(tree.rp_uuids)
    assert all(d["state"] == ARQState.BOUND and d["resource_class"] == "FPGA" and d["host"] == "host1"
               for d in devices)
    held, _ = store.transact(bind_plan.delete_releasing, None, consumer, None, True)
    assert held.arq_uuids == arqs and held.consumers == [consumer] and len(held.handles) == 2
    assert store.query(claims.listing) == {}


def test_excluded_rps_are_never_chosen(store):
    add_profile(store, "one", [{"resources:FPGA": "1"}])
    tree = add_device(store, "host1", deployables=2, handles_per_deployable=1)
    consumer = claims.consumer_uuid(None)
    (arq,) = store.transact(claims.start, "one", 1, None, consumer, "p1", LIMITS, {tree.rp_uuids[0]})
    assert store.query(claims.devices, consumer)[0]["rp_uuid"] == tree.rp_uuids[1]
    with pytest.raises(claims.ClaimError, match=r"no free FPGA on host host1 for profile 'one'"):
        store.transact(claims.start, "one", 1, "host1", claims.consumer_uuid(None), "p1", LIMITS,
                       {tree.rp_uuids[0]})
    assert list(store.query(claims.listing)) == [consumer]  # the refused claim created nothing


@pytest.mark.parametrize("profile,count,error", [
    ("nope", 1, "device profile 'nope' not found"),
    ("one", 0, "count must be at least 1"),
    ("one", 9, r"9 x profile 'one' is 9 accelerators, more than the 8 one claim may ask for"),
    ("huge", 1, r"group 0: resources:FPGA amount '100' must be"),
])
def test_bad_claims_create_nothing(store, profile, count, error):
    add_profile(store, "one", [{"resources:FPGA": "1"}])
    add_profile(store, "huge", [{"resources:FPGA": "100"}])
    add_device(store, "host1", handles_per_deployable=10)
    with pytest.raises(claims.ClaimError, match=error):
        store.transact(claims.start, profile, count, None, claims.consumer_uuid(None), "p1", LIMITS, ())
    assert store.query(claims.listing) == {} and store.query(bind_plan.in_flight) == []

"""store/device_choice.py, the device choice of a standalone bind, on both databases: a group's
units and traits, first fit in (host, name) order taking a handle per pick, excluded RPs and handles
already spoken for never chosen, forbidden traits honoured, and a refusal naming the matching
disabled device and its reason; `deployable_rows` tells free, bound, disabled and lost apart."""

from __future__ import annotations

import pytest
from factories import add_device, add_profile
from sqlmodel import select

from rayborg.store import arq_state, device_choice, hosts
from rayborg.store.device_choice import NoMatchingDevice
from rayborg.store.tables import Device, DeviceStatus, ExtARQ


def test_requirements_of_a_group():
    group = {"resources:FPGA": "2", "resources:PGPU": "1", "trait:CUSTOM_A": "required",
             "trait:CUSTOM_B": "forbidden", "accel:bitstream_id": "x"}
    assert device_choice.requirements(group) == (["FPGA", "FPGA", "PGPU"], {"CUSTOM_A"}, {"CUSTOM_B"})
    row = {"resource_class": "FPGA", "traits": ["CUSTOM_A", "OWNER_CYBORG"]}
    assert device_choice.matches(row, "FPGA", {"CUSTOM_A"}, {"CUSTOM_B"})
    assert not device_choice.matches(row, "PGPU", set(), set())
    assert not device_choice.matches(row, "FPGA", {"CUSTOM_C"}, set())
    assert not device_choice.matches(row, "FPGA", set(), {"CUSTOM_A"})


@pytest.fixture
def two_hosts(store):
    """Two 1-handle FPGAs (h1 first in order, h2) and a profile of two 1-FPGA groups, its 2 ARQs."""
    add_profile(store, "two", [{"resources:FPGA": "1", "trait:CUSTOM_FPGA_INTEL": "required"}] * 2)
    h1 = add_device(store, hostname="h1", handles_per_deployable=1, bus=0x10)
    h2 = add_device(store, hostname="h2", handles_per_deployable=1, bus=0x11)
    store.transact(arq_state.create_arqs, "two", None)
    return h1, h2


def _choose(store, **kwargs):
    def pick(session):
        arqs = session.exec(select(ExtARQ).order_by(ExtARQ.id)).all()
        return [(c.row["host"], c.resource_class) for c in device_choice.choose(session, arqs, **kwargs)]

    return store.transact(pick)


def test_first_fit_in_host_order_one_handle_per_pick(store, two_hosts):
    assert _choose(store) == [("h1", "FPGA"), ("h2", "FPGA")]
    assert store.query(device_choice.promised_handles) == {}  # choosing writes nothing


def test_a_host_asked_for_excluded_rps_and_taken_handles_are_never_chosen(store, two_hosts):
    h1, h2 = two_hosts
    with pytest.raises(NoMatchingDevice, match="on host h2"):
        _choose(store, host="h2")  # one handle there, two ARQs: all or nothing
    with pytest.raises(NoMatchingDevice):
        _choose(store, exclude=[h1.rp_uuids[0]])
    with pytest.raises(NoMatchingDevice):
        _choose(store, taken={("h1", h1.rp_uuids[0]): 1})
    add_device(store, hostname="h3", handles_per_deployable=1, bus=0x12)
    assert _choose(store, exclude=[h1.rp_uuids[0]]) == [("h2", "FPGA"), ("h3", "FPGA")]
    assert _choose(store, taken={("h2", h2.rp_uuids[0]): 1}) == [("h1", "FPGA"), ("h3", "FPGA")]


def test_forbidden_traits_and_disabled_devices_named_in_the_refusal(store, two_hosts):
    h1, _ = two_hosts

    def disable(session):
        for dev in session.exec(select(Device)):
            dev.status = DeviceStatus.MAINTAINING.value
            dev.status_reason = f"fan of {dev.hostname}"

    store.transact(disable)
    with pytest.raises(NoMatchingDevice, match="matching but disabled: device .* \\(fan of h1\\)") as err:
        _choose(store)
    assert {uuid for uuid, _ in err.value.disabled} == {h1.device_uuid, two_hosts[1].device_uuid}
    assert err.value.required == {"CUSTOM_FPGA_INTEL"} and err.value.resource_class == "FPGA"


def test_deployable_rows_state(store, two_hosts):
    h1, h2 = two_hosts
    add_device(store, hostname="h3", handles_per_deployable=1, bus=0x12)
    store.transact(hosts.mark_lost, "h3")

    def disable_h2(session):
        session.exec(select(Device).where(Device.hostname == "h2")).one().status = DeviceStatus.MAINTAINING.value

    store.transact(disable_h2)
    rows = store.query(device_choice.deployable_rows)
    assert [(r["host"], r["state"], r["free"], r["resource_class"]) for r in rows] == [
        ("h1", "free", 1, "FPGA"), ("h2", "disabled", 1, "FPGA"), ("h3", "lost", 1, "FPGA")]
    assert [r["host"] for r in store.query(device_choice.deployable_rows, "h2")] == ["h2"]

"""store/placement_state.py: what a device RP should look like. Its uuid follows from its name,
traits are the `traitN` attributes plus OWNER_CYBORG (sorted, once each), the resource class comes
from `rc`, and a disabled device or a lost host reserves the whole inventory; on both databases."""

from __future__ import annotations

import uuid

from factories import add_device
from sqlmodel import select

from rayborg.store import hosts
from rayborg.store.placement_state import (OWNER_CYBORG, ProviderState, desired_state, desired_traits,
                                           provider_uuid)
from rayborg.store.tables import Deployable, Device, DeviceStatus

PARENT = "99999999-2222-4333-8444-555555555555"


def test_provider_uuid_is_stable_per_name():
    assert provider_uuid("h1_fpga_0") == provider_uuid("h1_fpga_0")
    assert provider_uuid("h1_fpga_0") != provider_uuid("h1_fpga_1")
    assert uuid.UUID(provider_uuid("h1_fpga_0")).version == 3


def test_desired_traits_take_only_trait_keys_and_add_the_owner():
    attrs = {"trait1": "CUSTOM_B", "trait0": "CUSTOM_A", "rc": "FPGA", "traitx": "NOT_A_TRAIT",
             "trait2": "CUSTOM_A"}
    assert desired_traits(attrs) == sorted({"CUSTOM_A", "CUSTOM_B", OWNER_CYBORG})
    assert desired_traits({}) == [OWNER_CYBORG]


def test_state_round_trips_through_its_json_form():
    state = ProviderState(uuid="u", name="n", parent_uuid=PARENT, resource_class="PGPU", total=4,
                          reserved=0, traits=("A", "B"))
    assert ProviderState.from_dict(state.as_dict()) == state
    assert ProviderState.from_dict(dict(state.as_dict(), total="4")) == state


def _desired(session, dep_id):
    dep = session.get(Deployable, dep_id)
    return desired_state(session, dep, session.get(Device, dep.device_id), PARENT)


def test_desired_state_of_an_enabled_disabled_and_lost_device(store):
    tree = add_device(store, hostname="h1", rc="PGPU", traits=("CUSTOM_GPU_X",), handles_per_deployable=3)
    dep = tree.deployable_ids[0]
    state = store.query(_desired, dep)
    assert state == ProviderState(uuid=tree.rp_uuids[0], name=state.name, parent_uuid=PARENT,
                                  resource_class="PGPU", total=3, reserved=0,
                                  traits=tuple(sorted({"CUSTOM_GPU_X", OWNER_CYBORG})))

    def set_status(session, status):
        session.exec(select(Device)).one().status = status

    store.transact(set_status, DeviceStatus.MAINTAINING.value)
    assert store.query(_desired, dep).reserved == 3
    store.transact(set_status, DeviceStatus.ENABLED.value)
    assert store.query(_desired, dep).reserved == 0
    store.transact(hosts.mark_lost, "h1")
    assert store.query(_desired, dep).reserved == 3

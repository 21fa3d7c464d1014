"""The Placement client against the real openstack-placement: writes only what changed, survives
generation conflicts, reports an unreachable Placement as such."""

import dataclasses
import uuid

import pytest

from rayborg.actors.placement_client import PlacementClient, PlacementError, PlacementUnavailable
from rayborg.store.placement_state import ProviderState, provider_uuid


@pytest.fixture
def client(placement_server):
    return PlacementClient(placement_server.url)


@pytest.fixture
def compute_node(client):
    name = f"compute-{uuid.uuid4().hex[:8]}"
    resp = client._request("POST", "/resource_providers", {"name": name, "uuid": provider_uuid(name)})
    assert resp.status_code == 200
    return name, provider_uuid(name)


def _desired(parent: str, host: str, **changes) -> ProviderState:
    name = f"{host}_fpga0"
    base = ProviderState(uuid=provider_uuid(name), name=name, parent_uuid=parent,
                         resource_class="CUSTOM_ACCELERATOR_FPGA", total=4, reserved=0,
                         traits=("OWNER_CYBORG", "CUSTOM_FPGA_INTEL"))
    return dataclasses.replace(base, **changes)


def test_first_apply_creates_everything_and_unchanged_costs_nothing(client, compute_node):
    host, parent = compute_node
    desired = _desired(parent, host)
    client.apply(desired, None)
    rp = client.get_provider(desired.uuid)
    assert rp["parent_provider_uuid"] == parent and rp["name"] == desired.name
    _, inv = client.get_inventories(desired.uuid)
    assert inv["CUSTOM_ACCELERATOR_FPGA"]["total"] == 4 and inv["CUSTOM_ACCELERATOR_FPGA"]["reserved"] == 0
    assert sorted(client.get_traits(desired.uuid)[1]) == ["CUSTOM_FPGA_INTEL", "OWNER_CYBORG"]

    client.calls.clear()
    client.apply(desired, desired)
    assert sum(client.calls.values()) == 0


def test_disable_sets_reserved_to_total_with_one_write(client, compute_node):
    host, parent = compute_node
    desired = _desired(parent, host)
    client.apply(desired, None)
    client.calls.clear()
    disabled = dataclasses.replace(desired, reserved=4)
    client.apply(disabled, desired)
    assert client.writes == 1
    assert client.get_inventories(desired.uuid)[1]["CUSTOM_ACCELERATOR_FPGA"]["reserved"] == 4


def test_generation_conflict_is_retried_from_a_fresh_read(client, compute_node, placement_server):
    host, parent = compute_node
    desired = _desired(parent, host)
    client.apply(desired, None)
    other = PlacementClient(placement_server.url)
    real_get = client.get_traits
    raced = []

    def racing_get(rp):  # another writer changes the provider between our read and our write
        gen, traits = real_get(rp)
        if not raced:
            raced.append(1)
            other.set_traits(rp, ["OWNER_CYBORG"])
        return gen, traits

    client.get_traits = racing_get
    client.set_traits(desired.uuid, ["OWNER_CYBORG", "CUSTOM_FPGA_FUNCTION_ID_INTEL_X"])
    assert sorted(real_get(desired.uuid)[1]) == ["CUSTOM_FPGA_FUNCTION_ID_INTEL_X", "OWNER_CYBORG"]
    assert client.calls["PUT"] >= 2


def test_bad_request_is_an_error_not_retried(client, compute_node):
    host, parent = compute_node
    desired = _desired(parent, host)
    client.apply(desired, None)
    client.calls.clear()
    with pytest.raises(PlacementError) as err:
        client.set_inventory(desired.uuid, "CUSTOM_ACCELERATOR_FPGA", total=-1, reserved=0)
    assert err.value.status == 400 and client.calls["PUT"] == 1


def test_unreachable_placement():
    client = PlacementClient("http://127.0.0.1:9", timeout=2)
    with pytest.raises(PlacementUnavailable):
        client.find_provider_by_name("x")

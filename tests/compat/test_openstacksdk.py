"""openstacksdk's accelerator proxy, unmodified, against a running `rayborg serve` (clients.md)."""

from __future__ import annotations

import time
import uuid

import pytest

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def conn(served):
    import openstack

    connection = openstack.connection.Connection(auth_type="none", accelerator_endpoint_override=f"{served.url}/v2")
    yield connection
    connection.close()


def wait_for_state(conn, arq_uuid: str, states: set[str], timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        state = conn.accelerator.get_accelerator_request(arq_uuid).state
        if state in states or time.monotonic() > deadline:
            return state
        time.sleep(0.05)


def test_devices_and_deployables(conn, served):
    devices = {d.id: d for d in conn.accelerator.devices()}
    assert set(devices) == {served.tree.device_uuid, served.gpu.device_uuid}
    fpga = devices[served.tree.device_uuid]
    assert (fpga.type, fpga.vendor, fpga.hostname) == ("FPGA", "0x8086", "host1")
    assert conn.accelerator.get_device(served.gpu.device_uuid).model == "A100"
    deployables = {d.id: d for d in conn.accelerator.deployables()}
    assert set(deployables) == set(served.tree.deployable_uuids + served.gpu.deployable_uuids)
    dep = conn.accelerator.get_deployable(served.tree.deployable_uuids[0])
    assert dep.num_accelerators == 4 and dep.name.startswith("host1_")
    # The SDK filters client-side; list calls must accept its paging parameters.
    assert [d.id for d in conn.accelerator.devices(hostname="host2")] == [served.gpu.device_uuid]
    assert len(list(conn.accelerator.devices(limit=1))) == 2


def test_device_profile_lifecycle(conn):
    groups = [{"resources:FPGA": "1", "trait:CUSTOM_FPGA_INTEL": "required"}, {"resources:PGPU": "1"}]
    created = conn.accelerator.create_device_profile(name="sdk-dp", groups=groups, description="from the sdk")
    assert created.id and created.name == "sdk-dp" and created.groups == groups
    shown = conn.accelerator.get_device_profile(created.id)
    assert (shown.name, shown.groups, shown.description) == ("sdk-dp", groups, "from the sdk")
    assert "sdk-dp" in {p.name for p in conn.accelerator.device_profiles()}
    conn.accelerator.delete_device_profile(created.id, ignore_missing=False)
    assert "sdk-dp" not in {p.name for p in conn.accelerator.device_profiles()}
    from openstack import exceptions

    with pytest.raises(exceptions.NotFoundException):
        conn.accelerator.delete_device_profile(created.id, ignore_missing=False)
    with pytest.raises(exceptions.ConflictException):  # duplicate names surface as the SDK's 409
        for _ in range(2):
            conn.accelerator.create_device_profile(name="sdk-dup", groups=[{"resources:FPGA": "1"}])


def test_accelerator_request_lifecycle_with_bind(conn, served):
    conn.accelerator.create_device_profile(name="sdk-arq-dp", groups=[{"resources:FPGA": "1"}])
    arq = conn.accelerator.create_accelerator_request(device_profile_name="sdk-arq-dp")
    assert arq.state == "Initial" and arq.device_profile_name == "sdk-arq-dp"
    assert arq.id in {a.id for a in conn.accelerator.accelerator_requests()}
    instance = str(uuid.uuid4())
    conn.accelerator.patch_accelerator_request(arq.id, [
        {"op": "add", "path": "/hostname", "value": "host1"},
        {"op": "add", "path": "/device_rp_uuid", "value": served.tree.rp_uuids[0]},
        {"op": "add", "path": "/instance_uuid", "value": instance}])
    assert wait_for_state(conn, arq.id, {"Bound", "BindFailed"}) == "Bound"
    bound = conn.accelerator.get_accelerator_request(arq.id)
    assert bound.instance_uuid == instance and bound.hostname == "host1"
    assert bound.attach_handle_type == "PCI" and bound.attach_handle_info["bus"] == "5e"
    conn.accelerator.patch_accelerator_request(arq.id, [
        {"op": "remove", "path": p} for p in ("/hostname", "/device_rp_uuid", "/instance_uuid")])
    # The unbind answers once it is done: the ARQ is Unbound (not Initial) and holds nothing.
    unbound = conn.accelerator.get_accelerator_request(arq.id)
    assert unbound.state == "Unbound" and unbound.instance_uuid is None and unbound.hostname is None
    assert unbound.attach_handle_type == "" and unbound.attach_handle_info == {}
    conn.accelerator.delete_accelerator_request(arq.id, ignore_missing=False)
    assert arq.id not in {a.id for a in conn.accelerator.accelerator_requests()}
    conn.accelerator.delete_device_profile("sdk-arq-dp", ignore_missing=False)

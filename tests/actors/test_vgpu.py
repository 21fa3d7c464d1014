"""vGPU through the whole runtime: a bind through the REST API creates the mdev on the host (via the
binder and the HostAgent), an unbind through the REST API removes it again."""

import uuid

import pytest
from sqlmodel import select

from factories import add_profile
from rayborg.actors.runtime_config import RuntimeConfig
from rayborg.api.app import create_app
from rayborg.api.ray_binder import RayBinder
from rayborg.drivers.testing import FakeKernel, fixture_tree
from rayborg.settings import Settings
from rayborg.store.tables import AttachHandle, Deployable
from runtime_helpers import fresh_store, kill_runtime, make_compute_nodes, start_runtime, wait_for

pytestmark = [pytest.mark.xdist_group("ray"), pytest.mark.slow]


@pytest.fixture
async def vgpu_api(ray_cluster, placement_server, tmp_path, aiohttp_client):
    store = fresh_store(tmp_path)
    root = fixture_tree("nvidia_vgpu", tmp_path / "host-a")
    make_compute_nodes(placement_server.url, ["host-a"])
    config = RuntimeConfig(database_url=store.url, placement_url=placement_server.url, report_interval=0.5,
                           host_overrides={"host-a": {"sysfs_root": str(root)}, "host-b": {"drivers": []},
                                           "host-c": {"drivers": []}})
    start_runtime(config)
    wait_for(lambda: store.query(lambda s: len(list(s.exec(select(Deployable))))) == 2, what="vGPUs")
    binder = RayBinder(store, config.binder_count)
    client = await aiohttp_client(create_app(Settings(database_url=store.url), store, binder=binder))
    yield client, store, root, binder
    kill_runtime()
    store.dispose()


def _mdevs(root):
    devices = root / "bus" / "mdev" / "devices"
    return sorted(p.name for p in devices.iterdir()) if devices.is_dir() else []


async def test_bind_creates_and_unbind_removes_the_mdev(vgpu_api):
    client, store, root, binder = vgpu_api
    kernel = FakeKernel(root)
    before = _mdevs(root)
    add_profile(store, "vgpu", [{"resources:VGPU": "1"}])
    arq = (await (await client.post("/v2/accelerator_requests", json={"device_profile_name": "vgpu"})).json())["arqs"][0]
    dep = store.query(lambda s: s.exec(select(Deployable).order_by(Deployable.name)).first())
    instance = str(uuid.uuid4())
    ops = [{"op": "add", "path": "/hostname", "value": "host-a"},
           {"op": "add", "path": "/device_rp_uuid", "value": dep.rp_uuid},
           {"op": "add", "path": "/instance_uuid", "value": instance}]
    assert (await client.patch("/v2/accelerator_requests", json={arq["uuid"]: ops})).status == 202
    await binder.drain()
    bound = await (await client.get(f"/v2/accelerator_requests/{arq['uuid']}")).json()
    assert bound["state"] == "Bound" and bound["attach_handle_type"] == "MDEV"
    assert bound["attach_handle_info"]["asked_type"] == "nvidia-223"
    assert kernel.settle() == [f"create {bound['attach_handle_uuid']}"]
    assert _mdevs(root) == sorted(before + [bound["attach_handle_uuid"]])

    remove = [{"op": "remove", "path": f"/{f}"} for f in ("hostname", "device_rp_uuid", "instance_uuid")]
    assert (await client.patch("/v2/accelerator_requests", json={arq["uuid"]: remove})).status == 202
    await binder.drain()
    assert kernel.settle() == [f"remove {bound['attach_handle_uuid']}"]
    assert _mdevs(root) == before
    assert store.query(lambda s: [h.in_use for h in s.exec(select(AttachHandle))]).count(True) == 0

"""vGPU through the whole runtime: a bind through the REST API creates the mdev on the host (via the
binder and the HostAgent), an unbind through the REST API removes it again. A binder that dies
between claiming the handle and creating the mdev finishes the bind after its restart with the same
handle; a bind nobody works on any more is taken up again by its binder."""

import os
import signal
import uuid

import pytest
import ray
from sqlmodel import select

from factories import add_profile
from rayborg.actors.binder import binder_index
from rayborg.actors.runtime_config import NAMESPACE, RuntimeConfig, binder_name
from rayborg.api.app import create_app
from rayborg.api.ray_binder import RayBinder
from rayborg.drivers.sysfs_tree import fixture_tree
from rayborg.settings import Settings
from rayborg.store import arq_state
from rayborg.store.tables import AttachHandle, Deployable, ExtARQ
from runtime_helpers import fresh_store, kill_runtime, make_compute_nodes, start_runtime, wait_for
from sysfs_helpers import FakeKernel

pytestmark = [pytest.mark.xdist_group("ray"), pytest.mark.slow]


@pytest.fixture
async def vgpu_api(request, ray_cluster, placement_server, tmp_path, aiohttp_client):
    store = fresh_store(tmp_path)
    root = fixture_tree("nvidia_vgpu", tmp_path / "host-a")
    make_compute_nodes(placement_server.url, ["host-a"])
    config = RuntimeConfig(database_url=store.url, placement_url=placement_server.url, report_interval=0.5,
                           redrive_interval=getattr(request, "param", 60.0),
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


def _started_vgpu_bind(store) -> tuple[str, str]:
    """An ARQ of a vGPU profile moved to BindStarted in the store (as the bind PATCH does) but
    never handed to a binder; (arq uuid, instance)."""
    add_profile(store, "vgpu", [{"resources:VGPU": "1"}])
    arq = store.transact(arq_state.create_arqs, "vgpu", "proj")[0].uuid
    dep = store.query(lambda s: s.exec(select(Deployable).order_by(Deployable.name)).first())
    instance = str(uuid.uuid4())
    store.transact(arq_state.start_bind, {arq: arq_state.BindTarget("host-a", dep.rp_uuid, instance, "proj")})
    return arq, instance


def _arq(store, arq: str) -> ExtARQ:
    return store.query(lambda s: s.exec(select(ExtARQ).where(ExtARQ.uuid == arq)).one())


@pytest.mark.parametrize("how", ["ray.kill", "kill -9"])
async def test_binder_dead_between_claim_and_mdev_finishes_with_the_same_handle(vgpu_api, how):
    client, store, root, binder = vgpu_api
    kernel = FakeKernel(root)
    before = _mdevs(root)
    arq, instance = _started_vgpu_bind(store)
    # What a binder has done when it dies right after claiming: the handle is held, no mdev yet.
    assert store.transact(arq_state.hold_handle, arq) == arq_state.ARQState.BIND_STARTED
    held = store.query(lambda s: s.get(AttachHandle, _arq(store, arq).attach_handle_id).uuid)
    assert _arq(store, arq).nova_event_pending is False  # Nova hears nothing of a half-done bind
    owner = ray.get_actor(binder_name(binder_index(instance, 2)), namespace=NAMESPACE)
    pid = ray.get(owner.status.remote(), timeout=30)["pid"]
    if how == "ray.kill":
        ray.kill(owner, no_restart=False)
    else:
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: _arq(store, arq).state == "Bound", timeout=60, what="the resumed bind")
    row = _arq(store, arq)
    assert ray.get(owner.status.remote(), timeout=30)["pid"] != pid  # a new process finished it
    assert store.query(lambda s: s.get(AttachHandle, row.attach_handle_id).uuid) == held
    assert kernel.settle() == [f"create {held}"] and _mdevs(root) == sorted(before + [held])
    assert store.query(lambda s: [h.in_use for h in s.exec(select(AttachHandle))]).count(True) == 1


@pytest.mark.parametrize("vgpu_api", [1.0], indirect=True)
async def test_a_bind_left_in_bind_started_is_taken_up_again(vgpu_api):
    client, store, root, binder = vgpu_api
    kernel = FakeKernel(root)
    arq, instance = _started_vgpu_bind(store)  # the front door died before handing it over
    wait_for(lambda: _arq(store, arq).state == "Bound", timeout=30, interval=0.2, what="the re-driven bind")
    handle = store.query(lambda s: s.get(AttachHandle, _arq(store, arq).attach_handle_id).uuid)
    assert kernel.settle() == [f"create {handle}"]
    owner = ray.get_actor(binder_name(binder_index(instance, 2)), namespace=NAMESPACE)
    assert ray.get(owner.status.remote(), timeout=30)["binds_redriven"] >= 1

"""Faults the runtime must survive: binders and PlacementSync killed (ray.kill and kill -9) in the
middle of their work, Nova failing, and a crowd of concurrent binds on few devices."""

import asyncio
import os
import random
import signal

import pytest
import ray
from sqlmodel import select

from factories import add_profile
from rayborg.actors.binder import binder_index
from rayborg.actors.placement_client import PlacementClient
from rayborg.actors.runtime_config import NAMESPACE, PLACEMENT_SYNC_NAME, RuntimeConfig, binder_name
from rayborg.api.ray_binder import RayBinder
from rayborg.store import arq_state
from rayborg.store.tables import Deployable
from runtime_helpers import (arq_states, assert_handles_consistent, fresh_store, kill_runtime, make_compute_nodes,
                             new_instance, start_runtime, store_matches_placement, wait_for)

pytestmark = [pytest.mark.xdist_group("ray"), pytest.mark.slow]
HOSTS = ("host-a", "host-b", "host-c")


def _runtime(tmp_path, placement_server, nova, specs: dict[str, str]):
    store = fresh_store(tmp_path)
    make_compute_nodes(placement_server.url, HOSTS)
    seed = random.randrange(1, 4000)
    config = RuntimeConfig(
        database_url=store.url, placement_url=placement_server.url, nova_url=nova.url, report_interval=0.5,
        retry_interval=0.2,
        host_overrides={h: {"fake_devices": specs[h], "driver_options": {"fake": {"seed": seed + 7 * i}}}
                        if h in specs else {"drivers": []} for i, h in enumerate(HOSTS)})
    start_runtime(config)
    return store, config


@pytest.fixture
def teardown():
    yield
    kill_runtime()


def _deployables(store, count):
    wait_for(lambda: store.query(lambda s: len(list(s.exec(select(Deployable))))) == count, what="devices")
    return store.query(lambda s: [(d.name.split("_")[0], d.rp_uuid) for d in s.exec(select(Deployable))])


def _start_binds(store, targets: list[tuple[str, str]], profile: str = "dp") -> list[str]:
    """One ARQ per (host, rp), each for its own instance, moved to BindStarted as the API does."""
    add_profile(store, profile, [{"resources:FPGA": "1"}])
    uuids = []
    for host, rp in targets:
        arq = store.transact(arq_state.create_arqs, profile, "proj")[0]
        store.transact(arq_state.start_bind, {arq.uuid: arq_state.BindTarget(host, rp, new_instance(), "proj")})
        uuids.append(arq.uuid)
    return uuids


def _pid(handle) -> int:
    return ray.get(handle.status.remote(), timeout=30)["pid"]


@pytest.mark.parametrize("how", ["ray.kill", "kill -9"])
def test_binder_killed_mid_bind_leaves_nothing_stuck(ray_cluster, placement_server, nova, tmp_path, teardown, how):
    store, config = _runtime(tmp_path, placement_server, nova, {"host-a": "fpga:2x4", "host-b": "fpga:1x4"})
    deps = _deployables(store, 3)
    arqs = _start_binds(store, [deps[i % 3] for i in range(40)])  # 40 asks for 12 handles
    binder = ray.get_actor(binder_name(0), namespace=NAMESPACE)
    pid = _pid(binder)
    ray.get(ray.get_actor(binder_name(1), namespace=NAMESPACE).status.remote())
    refs = [binder.bind.remote([u]) for u in arqs]  # all to binder 0: it owns them while it lives
    if how == "ray.kill":
        ray.kill(binder, no_restart=False)
    else:
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: "BindStarted" not in arq_states(store).values(), timeout=90, what="binds to resolve")
    states = list(arq_states(store).values())
    assert states.count("Bound") == 12 and states.count("BindFailed") == 28
    assert_handles_consistent(store)
    assert _pid(binder) != pid  # it came back
    ray.wait(refs, num_returns=len(refs), timeout=60)


@pytest.mark.parametrize("how", ["ray.kill", "kill -9"])
def test_placement_sync_killed_mid_report_converges(ray_cluster, placement_server, nova, tmp_path, teardown, how):
    store, config = _runtime(tmp_path, placement_server, nova,
                             {"host-a": "fpga:40x2", "host-b": "gpu:30", "host-c": "qat:30"})
    sync = ray.get_actor(PLACEMENT_SYNC_NAME, namespace=NAMESPACE)
    pid = _pid(sync)
    # while the first big reports are being applied and pushed
    if how == "ray.kill":
        ray.kill(sync, no_restart=False)
    else:
        os.kill(pid, signal.SIGKILL)
    _deployables(store, 100)
    placement = PlacementClient(placement_server.url)
    wait_for(lambda: store_matches_placement(store, placement), timeout=120, what="store and Placement to agree")
    assert _pid(sync) != pid


def test_nova_failing_is_retried_and_the_arq_still_resolves(ray_cluster, placement_server, nova, tmp_path, teardown):
    store, config = _runtime(tmp_path, placement_server, nova, {"host-a": "fpga:1x2"})
    (dep,) = _deployables(store, 1)
    nova.fail_next = 3
    (arq,) = _start_binds(store, [dep])
    instance = store.query(lambda s: arq_state.lock_arqs(s, [arq])[0].instance_uuid)
    binder = ray.get_actor(binder_name(binder_index(instance, config.binder_count)), namespace=NAMESPACE)
    assert ray.get(binder.bind.remote([arq])) == {arq: "Bound"}
    wait_for(lambda: nova.delivered_events(), timeout=60, what="the event after Nova recovers")
    assert [c["failed"] for c in nova.calls] == [True, True, True, False]
    assert nova.delivered_events()[0] == {"name": "accelerator-request-bound", "server_uuid": instance,
                                          "tag": arq, "status": "completed"}


def test_100_concurrent_binds_on_10_devices_over_3_hosts(ray_cluster, placement_server, nova, tmp_path, teardown):
    store, config = _runtime(tmp_path, placement_server, nova,
                             {"host-a": "fpga:4x1", "host-b": "fpga:3x1", "host-c": "fpga:3x1"})
    deps = _deployables(store, 10)
    arqs = _start_binds(store, [deps[i % 10] for i in range(100)])
    binder = RayBinder(store, config.binder_count)

    async def go():
        await asyncio.gather(*(binder.submit([u]) for u in arqs))
        await binder.drain()

    asyncio.run(go())
    states = list(arq_states(store).values())
    assert states.count("Bound") == 10 and states.count("BindFailed") == 90
    assert_handles_consistent(store)
    wait_for(lambda: len(nova.delivered_events()) == 100, timeout=60, what="100 Nova events")
    assert {e["status"] for e in nova.delivered_events()} == {"completed", "failed"}

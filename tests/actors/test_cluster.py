"""Three hosts, each with its own fixture sysfs tree: the right devices under the right compute
node; a device removed from one tree leaves the store and Placement; Placement down for a while."""

import asyncio
import shutil
import uuid

import pytest
import ray
from sqlmodel import select

from rayborg.actors.placement_client import PlacementClient
from rayborg.actors.runtime_config import NAMESPACE, RuntimeConfig, host_agent_name
from rayborg.drivers.sysfs_tree import fixture_tree
from rayborg.store.placement_state import provider_uuid
from rayborg.store.tables import Deployable, Device
from runtime_helpers import (fresh_store, kill_runtime, make_compute_nodes, start_runtime, store_matches_placement,
                             wait_for)

pytestmark = [pytest.mark.xdist_group("ray"), pytest.mark.slow]
TREES = {"host-a": "intel_fpga", "host-b": "nvidia_gpu", "host-c": "intel_qat"}
_CONFIG: dict = {}


@pytest.fixture
def cluster_runtime(ray_cluster, placement_server, tmp_path):
    store = fresh_store(tmp_path)
    roots = {h: fixture_tree(fam, tmp_path / h) for h, fam in TREES.items()}
    make_compute_nodes(placement_server.url, TREES)
    config = RuntimeConfig(database_url=store.url, placement_url=placement_server.url, report_interval=0.3,
                           retry_interval=0.2,
                           host_overrides={h: {"sysfs_root": str(r)} for h, r in roots.items()})
    start_runtime(config)
    _CONFIG[store.url] = config
    yield store, roots, PlacementClient(placement_server.url)
    kill_runtime()
    store.dispose()


def _devices(store):
    return store.query(lambda s: sorted((d.hostname, d.std_board_info_key) for d in s.exec(select(Device))))


def test_each_host_reports_its_own_tree_and_removal_propagates(cluster_runtime, placement_server):
    store, roots, placement = cluster_runtime
    wait_for(lambda: {h for h, _ in _devices(store)} == set(TREES), what="3 hosts reporting")
    by_host = {h: [k for hh, k in _devices(store) if hh == h] for h in TREES}
    assert by_host["host-b"] == ["nvidia_gpu:0000:3b:00.0", "nvidia_gpu:0000:af:00.0"]
    assert all(k.startswith("intel_qat:") for k in by_host["host-c"])
    wait_for(lambda: store_matches_placement(store, placement), what="store and Placement to agree")
    for name, rp in store.query(lambda s: [(d.name, d.rp_uuid) for d in s.exec(select(Deployable))]):
        assert placement.get_provider(rp)["parent_provider_uuid"] == provider_uuid(name.split("_")[0])

    # Unplug one GPU from host-b's tree.
    gone = store.query(lambda s: s.exec(select(Deployable).where(Deployable.name == "host-b_0000_af_00_0")).one())
    (roots["host-b"] / "bus/pci/devices/0000:af:00.0").unlink()
    wait_for(lambda: "nvidia_gpu:0000:af:00.0" not in [k for _, k in _devices(store)], what="removal in store")
    wait_for(lambda: placement.get_provider(gone.rp_uuid) is None, what="removal in Placement")
    assert placement.get_provider(provider_uuid("host-b_0000_3b_00_0")) is not None


def test_placement_down_daemon_keeps_going_and_converges(cluster_runtime, placement_server):
    store, roots, placement = cluster_runtime
    # All three first: a host that has not reported yet also "matches" (nothing in either place).
    wait_for(lambda: {h for h, _ in _devices(store)} == set(TREES), what="3 hosts reporting")
    wait_for(lambda: store_matches_placement(store, placement), what="first sync")
    placement_server.stop()
    try:
        shutil.rmtree(roots["host-c"] / "bus/pci/devices")  # host-c loses every device meanwhile
        wait_for(lambda: not [h for h, _ in _devices(store) if h == "host-c"], what="store updated without Placement")
        agent = ray.get_actor(host_agent_name("host-a"), namespace=NAMESPACE)
        assert ray.get(agent.status.remote(), timeout=10)["hostname"] == "host-a"  # still serving
        asyncio.run(_front_door_serves(store, _CONFIG[store.url]))  # and so does the REST API
    finally:
        placement_server.restart(keep_db=True)
    # The removed providers' deletion (tombstones) is pushed after the store already matches: wait
    # for both.
    removed = provider_uuid("host-c_0000_3f_00_0")
    wait_for(lambda: store_matches_placement(store, placement) and placement.get_provider(removed) is None,
             timeout=90, what="convergence after Placement returns, host-c's providers deleted")


def test_a_node_that_leaves_keeps_its_devices_but_binds_nothing(cluster_runtime, ray_cluster):
    from factories import add_profile
    from rayborg.store import arq_state
    from rayborg.store.tables import Host
    from runtime_helpers import new_instance

    store, roots, placement = cluster_runtime
    wait_for(lambda: {h for h, _ in _devices(store)} == set(TREES), what="3 hosts reporting")
    cluster = ray_cluster["cluster"]
    sup = _supervisor(store)
    cluster.remove_node(ray_cluster["nodes"]["host-c"])
    try:
        wait_for(lambda: (sup.reconcile(), _host_state(store, "host-c") == "lost")[1], what="host-c marked lost")
        assert [k for h, k in _devices(store) if h == "host-c"]  # devices kept
        rp = store.query(lambda s: s.exec(select(Deployable).where(Deployable.name.startswith("host-c"))).first().rp_uuid)
        add_profile(store, "qat", [{"resources:CUSTOM_QAT": "1"}])
        arq = store.transact(arq_state.create_arqs, "qat", "p")[0].uuid
        instance = new_instance()
        store.transact(arq_state.start_bind, {arq: arq_state.BindTarget("host-c", rp, instance, "p")})
        from rayborg.actors.binder import binder_index
        from rayborg.actors.runtime_config import binder_name

        binder = ray.get_actor(binder_name(binder_index(instance, 2)), namespace=NAMESPACE)
        assert ray.get(binder.bind.remote([arq]), timeout=60) == {arq: "BindFailed"}
        assert "left the cluster" in store.query(lambda s: arq_state.lock_arqs(s, [arq])[0].bind_error)
    finally:
        ray_cluster["nodes"]["host-c"] = cluster.add_node(
            num_cpus=0, labels={"rayborg-host": "host-c"}, include_dashboard=False,
            object_store_memory=80 * 1024**2)
        cluster.wait_for_nodes()
    wait_for(lambda: (sup.reconcile(), _host_state(store, "host-c") == "up")[1], timeout=90, what="host-c back")
    assert store.query(lambda s: s.exec(select(Host).where(Host.hostname == "host-c")).one().state) == "up"


async def _front_door_serves(store, config):
    """A front door (the REST API with the binder actors) reads, writes and binds while Placement
    is down: a Nova-style bind needs no Placement call."""
    from aiohttp.test_utils import TestClient, TestServer

    from rayborg.api.app import create_app
    from rayborg.api.ray_binder import RayBinder
    from rayborg.settings import Settings

    binder = RayBinder(store, config.binder_count)
    app = create_app(Settings(database_url=store.url, _env_file=None), store, binder=binder)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/v2/devices")
        assert resp.status == 200
        assert {d["hostname"] for d in (await resp.json())["devices"]} == {"host-a", "host-b"}
        deps = (await (await client.get("/v2/deployables")).json())["deployables"]
        gpu = next(d for d in deps if d["name"] == "host-b_0000_3b_00_0")
        resp = await client.post("/v2/device_profiles", json=[{"name": "down-gpu", "groups": [{"resources:PGPU": "1"}]}])
        assert resp.status == 201, await resp.text()
        resp = await client.post("/v2/accelerator_requests", json={"device_profile_name": "down-gpu"})
        assert resp.status == 201, await resp.text()
        arq = (await resp.json())["arqs"][0]["uuid"]
        resp = await client.patch("/v2/accelerator_requests", json={arq: [
            {"op": "add", "path": "/hostname", "value": "host-b"},
            {"op": "add", "path": "/device_rp_uuid", "value": gpu["rp_uuid"]},
            {"op": "add", "path": "/instance_uuid", "value": str(uuid.uuid4())}]})
        assert resp.status == 202, await resp.text()
        await binder.drain()
        body = await (await client.get(f"/v2/accelerator_requests/{arq}")).json()
        assert body["state"] == "Bound" and body["device_rp_uuid"] == gpu["rp_uuid"]


def _host_state(store, hostname):
    from rayborg.store.tables import Host

    host = store.query(lambda s: s.exec(select(Host).where(Host.hostname == hostname)).first())
    return host.state if host else None


def _supervisor(store):
    """A second supervisor over the running actors (get_if_exists: it adopts them)."""
    from rayborg.actors.supervisor import Supervisor

    sup = Supervisor(_CONFIG[store.url])
    sup.reconcile()
    return sup


def test_a_new_node_gets_its_own_pinned_agent_and_reports(ray_cluster, placement_server, tmp_path):
    """A node that was never in the cluster (a new label name) gets `rayborg:host:<name>` on that
    node, and its devices reach the store and Placement. Every agent runs on its own host's node."""
    store = fresh_store(tmp_path)
    hosts = [*TREES, "host-d"]
    make_compute_nodes(placement_server.url, hosts)
    root = fixture_tree("nvidia_gpu", tmp_path / "host-d")
    config = RuntimeConfig(database_url=store.url, placement_url=placement_server.url, report_interval=3600,
                           retry_interval=0.2, host_overrides={
                               **{h: {"drivers": []} for h in TREES}, "host-d": {"sysfs_root": str(root)}})
    sup = start_runtime(config)
    cluster = ray_cluster["cluster"]
    node = None
    try:
        assert set(sup.agents) == set(TREES)
        node = cluster.add_node(num_cpus=0, labels={"rayborg-host": "host-d"}, include_dashboard=False,
                                object_store_memory=80 * 1024**2)
        cluster.wait_for_nodes()
        wait_for(lambda: (sup.reconcile(), "host-d" in sup.agents)[1], timeout=60, what="an agent for host-d")
        wait_for(lambda: [k for h, k in _devices(store) if h == "host-d"] ==
                 ["nvidia_gpu:0000:3b:00.0", "nvidia_gpu:0000:af:00.0"], what="host-d's GPUs in the store")
        wait_for(lambda: store_matches_placement(store, PlacementClient(placement_server.url)),
                 what="host-d's GPUs in Placement")
        rp = provider_uuid("host-d_0000_3b_00_0")
        assert PlacementClient(placement_server.url).get_provider(rp)["parent_provider_uuid"] == provider_uuid("host-d")
        nodes = {h: n.node_id for h, n in ray_cluster["nodes"].items()} | {"host-d": node.node_id}
        for host, node_id in nodes.items():
            status = ray.get(ray.get_actor(host_agent_name(host), namespace=NAMESPACE).status.remote(), timeout=30)
            assert (status["name"], status["node_id"]) == (f"rayborg:host:{host}", node_id)
        assert _host_state(store, "host-d") == "up"
    finally:
        kill_runtime()
        if node is not None:
            cluster.remove_node(node)
        store.dispose()
    assert {n["Labels"].get("rayborg-host") for n in ray.nodes() if n["Alive"]} == set(TREES)

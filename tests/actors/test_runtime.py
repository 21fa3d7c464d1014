"""The actor runtime on a 3-host Ray cluster with real Placement and a Nova recorder: hosts report
their devices, Placement gets them under the right compute nodes, binds go Bound and Nova hears."""

import random
import socket

import pytest
import ray
from sqlmodel import select

from rayborg.actors.placement_client import PlacementClient
from rayborg.actors.runtime_config import (NAMESPACE, PLACEMENT_SYNC_NAME, RuntimeConfig, binder_name,
                                           host_agent_name)
from rayborg.actors.supervisor import head_node_id
from rayborg.store import arq_state
from rayborg.store.engine import Store
from rayborg.store.migrate import upgrade
from rayborg.store.placement_state import provider_uuid
from rayborg.store.tables import Deployable, Device, ExtARQ, Host, HostState
from runtime_helpers import kill_runtime, make_compute_nodes, new_instance, start_runtime, wait_for
from factories import add_profile

pytestmark = [pytest.mark.xdist_group("ray"), pytest.mark.slow]
HOSTS = ("host-a", "host-b", "host-c")


@pytest.fixture
def runtime(ray_cluster, placement_server, nova, tmp_path):
    url = f"sqlite:///{tmp_path / 'rayborg.db'}"
    store = Store(url)
    upgrade(store.engine)
    make_compute_nodes(placement_server.url, HOSTS)
    # A host that reported before and whose node left while no daemon ran.
    store.transact(lambda s: s.add(Host(hostname="host-gone", state=HostState.UP.value)))
    seed = random.randrange(1, 4000)
    config = RuntimeConfig(
        database_url=url, placement_url=placement_server.url, nova_url=nova.url, report_interval=0.5,
        retry_interval=0.2, fake_devices="fpga:2x2",
        host_overrides={h: {"driver_options": {"fake": {"seed": seed + i * 7}}} for i, h in enumerate(HOSTS)})
    sup = start_runtime(config)
    yield {"store": store, "config": config, "supervisor": sup, "placement": PlacementClient(placement_server.url)}
    kill_runtime()
    store.dispose()


def _devices_by_host(store):
    return store.query(lambda s: sorted((d.hostname for d in s.exec(select(Device)))))


def test_every_host_reports_into_store_and_placement(runtime):
    store, placement = runtime["store"], runtime["placement"]
    wait_for(lambda: _devices_by_host(store) == sorted(h for h in HOSTS for _ in range(2)),
             what="6 devices from 3 hosts")
    deps = store.query(lambda s: [(d.rp_uuid, d.name) for d in s.exec(select(Deployable))])
    assert len(deps) == 6

    def in_placement():
        return all(placement.get_provider(rp) is not None for rp, _ in deps)

    wait_for(in_placement, what="device RPs in Placement")
    for rp, name in deps:
        host = name.split("_")[0]
        assert placement.get_provider(rp)["parent_provider_uuid"] == provider_uuid(host)
        assert placement.get_inventories(rp)[1]["FPGA"]["total"] == 2
    agent = ray.get_actor(host_agent_name("host-b"), namespace=NAMESPACE)
    status = ray.get(agent.status.remote())
    assert status["hostname"] == "host-b" and "fake" in status["drivers"]
    # The first reconcile marks lost a host the store had up but that is no Ray node any more.
    wait_for(lambda: store.query(lambda s: {h.hostname: h.state for h in s.exec(select(Host))}) == {
        "host-a": "up", "host-b": "up", "host-c": "up", "host-gone": "lost"}, what="host-gone marked lost")
    sync = ray.get(ray.get_actor(PLACEMENT_SYNC_NAME, namespace=NAMESPACE).status.remote())
    assert sync["reports_applied"] >= 3
    # What the dashboard and `rayborg status` show of the singletons: what they are and where they run
    # (the head node, with the SQLite store).
    binder = ray.get(ray.get_actor(binder_name(0), namespace=NAMESPACE).status.remote())
    head = head_node_id()
    assert (sync["name"], sync["node_id"], sync["hostname"]) == (PLACEMENT_SYNC_NAME, head, socket.gethostname())
    assert (binder["name"], binder["node_id"], binder["hostname"]) == (binder_name(0), head, socket.gethostname())


def test_bind_through_binder_reaches_bound_and_nova_hears(runtime, nova):
    store = runtime["store"]
    wait_for(lambda: len(_devices_by_host(store)) == 6, what="devices")
    add_profile(store, "dp1", [{"resources:FPGA": "1"}])
    arqs = store.transact(arq_state.create_arqs, "dp1", "proj")
    dep = store.query(lambda s: s.exec(select(Deployable).where(Deployable.name.startswith("host-c"))).first())
    instance = new_instance()
    target = arq_state.BindTarget(hostname="host-c", device_rp_uuid=dep.rp_uuid, instance_uuid=instance,
                                  project_id="proj")
    store.transact(arq_state.start_bind, {arqs[0].uuid: target})
    from rayborg.actors.binder import binder_index
    from rayborg.actors.runtime_config import binder_name

    binder = ray.get_actor(binder_name(binder_index(instance, 2)), namespace=NAMESPACE)
    assert ray.get(binder.bind.remote([arqs[0].uuid])) == {arqs[0].uuid: "Bound"}
    wait_for(lambda: nova.delivered_events(), what="Nova event")
    assert nova.delivered_events() == [{"name": "accelerator-request-bound", "server_uuid": instance,
                                        "tag": arqs[0].uuid, "status": "completed"}]
    assert store.query(lambda s: s.exec(select(ExtARQ)).one().nova_event_pending) is False

"""PMEM namespaces and SPDK targets through the whole runtime, as FPGAs and vGPUs go: host-a's
HostAgent discovers the example host (drivers/fixture_trees/pmem, a kernel-style sysfs tree; or
drivers/fixture_trees/spdk/rpc.json served by the SPDK stand-in on a unix socket), PlacementSync
stores it and mirrors it into the real Placement (resource class and traits per deployable), and
binds through the REST API -- one Nova-style naming the RP, one standalone -- end Bound with the
handle's type and info in the ARQ; unbinding frees the handle (and the standalone allocation).
An SPDK bind is prepared on the target (the driver's prepare through host-a's agent): an NVMe-oF
namespace's subsystem allows the instance's host NQN until the unbind removes it; a target that
refuses ends the bind BindFailed with its reason. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from aiohttp.test_utils import TestClient, TestServer
from runtime_helpers import (NOVA, allocations, create_arq, kill_runtime, make_compute_nodes, resolved,
                             start_runtime, until, wait_store_matches_placement)
from spdk_standin import SpdkStandin
from sqlmodel import select

from rayborg.actors.placement_client import PlacementClient
from rayborg.actors.runtime_config import RuntimeConfig
from rayborg.api.app import create_app
from rayborg.api.ray_binder import RayBinder
from rayborg.drivers.sysfs_tree import fixture_tree
from rayborg.settings import Settings
from rayborg.store.engine import Store
from rayborg.store.migrate import upgrade
from rayborg.store.placement_state import provider_uuid
from rayborg.store.tables import AttachHandle, Deployable, Device, ExtARQ, StandaloneAllocation

pytestmark = [pytest.mark.xdist_group("ray"), pytest.mark.slow]
ADMIN = {"X-Project-Id": "admin", "X-User-Id": "admin", "X-Roles": "admin"}
GiB6 = str(6 * 2**30)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'rayborg.db'}"
    return request.getfixturevalue("postgres_server").create_database()


async def _runtime(db_url, placement_server, nova, host_a: dict, deployables: int):
    store = Store(db_url)
    upgrade(store.engine)
    make_compute_nodes(placement_server.url, ["host-a", "host-b", "host-c"])
    config = RuntimeConfig(database_url=db_url, placement_url=placement_server.url, nova_url=nova.url,
                           report_interval=0.5, retry_interval=0.2,
                           host_overrides={"host-a": host_a, "host-b": {"drivers": []}, "host-c": {"drivers": []}})
    await asyncio.to_thread(start_runtime, config)
    placement = PlacementClient(placement_server.url)
    await until(lambda: len(store.query(lambda s: list(s.exec(select(Deployable))))) == deployables,
                f"{deployables} deployables in the store")
    await asyncio.to_thread(wait_store_matches_placement, store, placement)
    app = create_app(Settings(database_url=db_url, _env_file=None), store, RayBinder(store, config.binder_count))
    return store, placement, app


@pytest.fixture
async def pmem_env(ray_cluster, placement_server, nova, db_url, tmp_path):
    root = fixture_tree("pmem", tmp_path / "host-a")
    store, placement, app = await _runtime(db_url, placement_server, nova, {
        "drivers": ["pmem"], "sysfs_root": str(root), "dev_root": "/dev"}, deployables=3)
    async with TestClient(TestServer(app)) as client:
        yield client, store, placement, nova
    await asyncio.to_thread(kill_runtime)
    store.dispose()


@pytest.fixture
async def spdk_env(ray_cluster, placement_server, nova, db_url):
    target = SpdkStandin().start()
    store, placement, app = await _runtime(db_url, placement_server, nova, {
        "drivers": ["spdk"], "driver_options": {"spdk": {"socket": str(target.path)}}}, deployables=3)
    async with TestClient(TestServer(app)) as client:
        yield client, store, placement, nova, target
    await asyncio.to_thread(kill_runtime)
    store.dispose()
    target.stop()


# ---- what the store and Placement hold --------------------------------------------------------


def stored(store) -> dict[str, dict]:
    """Deployable name -> its device's type/cpid, RP, accelerators and handles (type, info, in use)."""
    def read(session):
        out = {}
        for dep, dev in session.exec(select(Deployable, Device).join(Device, Device.id == Deployable.device_id)):
            handles = session.exec(select(AttachHandle).where(AttachHandle.deployable_id == dep.id)).all()
            out[dep.name] = {"type": dev.type, "host": dev.hostname, "rp": dep.rp_uuid, "n": dep.num_accelerators,
                             "handles": sorted(((h.attach_type, json.loads(h.attach_info), h.in_use) for h in handles),
                                        key=lambda h: h[1]["nsid" if "nsid" in h[1] else "uuid" if "uuid" in h[1]
                                                           else "controller"])}
        return out
    return store.query(read)


def in_placement(placement, rp: str) -> tuple[str, dict, list[str]]:
    """(parent RP, {rc: (total, reserved)}, traits) of one RP in the real Placement."""
    parent = placement.get_provider(rp)["parent_provider_uuid"]
    inventories = {rc: (inv["total"], inv["reserved"]) for rc, inv in placement.get_inventories(rp)[1].items()}
    return parent, inventories, sorted(placement.get_traits(rp)[1])


def standalone_rows(store) -> list[str]:
    return store.query(lambda s: [r.consumer for r in s.exec(select(StandaloneAllocation))])


def handles_in_use(store) -> list[dict]:
    return sorted((info for dep in stored(store).values() for _, info, used in dep["handles"] if used),
                  key=json.dumps)


# ---- the REST round trip --------------------------------------------------------------------


async def make_profile(client, name: str, group: dict[str, str]) -> None:
    resp = await client.post("/v2/device_profiles", json=[{"name": name, "groups": [group]}], headers=ADMIN)
    assert resp.status == 201, await resp.text()


async def patch(client, body: dict, status: int = 202) -> dict | None:
    resp = await client.patch("/v2/accelerator_requests", json=body, headers=NOVA)
    assert resp.status == status, await resp.text()
    return None if status == 202 else await resp.json()


async def no_device_left(client, profile: str) -> None:
    """A standalone bind that finds no free deployable: 409 in Cyborg's error body, the ARQ untouched."""
    arq = await create_arq(client, profile)
    body = await patch(client, {arq: [{"op": "add", "path": "/instance_uuid", "value": str(uuid.uuid4())}]}, 409)
    assert "No free deployable" in json.loads(body["error_message"])["faultstring"]
    shown = await (await client.get(f"/v2/accelerator_requests/{arq}", headers=NOVA)).json()
    assert shown["state"] == "Initial" and shown["attach_handle_uuid"] is None


async def nova_bind(client, arq: str, rp: str, instance: str) -> dict:
    await patch(client, {arq: [{"op": "add", "path": "/hostname", "value": "host-a"},
                               {"op": "add", "path": "/device_rp_uuid", "value": rp},
                               {"op": "add", "path": "/instance_uuid", "value": instance}]})
    return await resolved(client, arq)


async def standalone_bind(client, arq: str, instance: str) -> dict:
    await patch(client, {arq: [{"op": "add", "path": "/instance_uuid", "value": instance}]})
    return await resolved(client, arq)


async def unbind(client, arq: str) -> dict:
    await patch(client, {arq: [{"op": "remove", "path": "/hostname"}]})
    return await resolved(client, arq, leaving="Bound")


# ---- PMEM -----------------------------------------------------------------------------------


def pmem_info(ns: str, dev: str, name: str, uuid_tail: str, size: str = GiB6) -> dict[str, str]:
    return {"dev": f"/dev/{dev}", "name": name, "namespace": ns, "size": size,
            "uuid": f"0b6a5f1e-1111-4a7a-9c11-{uuid_tail}"}


async def test_pmem_namespaces_stored_mirrored_and_bound(pmem_env):
    client, store, placement, nova = pmem_env
    deps = stored(store)
    # one deployable per (region, size label), one PMEM handle per devdax namespace; the fsdax
    # namespace and the idle seeds are not there
    assert {n: (d["type"], d["host"], d["n"]) for n, d in deps.items()} == {
        "host-a_region0_12GB": ("PMEM", "host-a", 1), "host-a_region0_6GB": ("PMEM", "host-a", 2),
        "host-a_region1_6GB": ("PMEM", "host-a", 1)}
    assert deps["host-a_region0_6GB"]["handles"] == [
        ("PMEM", pmem_info("namespace0.0", "dax0.0", "ns0", "000000000000"), False),
        ("PMEM", pmem_info("namespace0.1", "dax0.1", "ns1", "000000000001"), False)]
    # in the real Placement: children of host-a's compute node, the spec's RC and trait
    node = provider_uuid("host-a")
    for name, label, total in (("host-a_region0_6GB", "6GB", 2), ("host-a_region0_12GB", "12GB", 1),
                               ("host-a_region1_6GB", "6GB", 1)):
        rc = f"CUSTOM_PMEM_NAMESPACE_{label}"
        assert in_placement(placement, deps[name]["rp"]) == (node, {rc: (total, 0)}, sorted([rc, "OWNER_CYBORG"]))

    await make_profile(client, "vpmem-6gb", {"resources:CUSTOM_PMEM_NAMESPACE_6GB": "1",
                                             "trait:CUSTOM_PMEM_NAMESPACE_6GB": "required"})
    # Nova-style: the scheduler picked region1's RP
    nova_arq, nova_instance = await create_arq(client, "vpmem-6gb"), str(uuid.uuid4())
    bound = await nova_bind(client, nova_arq, deps["host-a_region1_6GB"]["rp"], nova_instance)
    assert (bound["state"], bound["attach_handle_type"]) == ("Bound", "PMEM"), bound
    assert bound["attach_handle_info"] == pmem_info("namespace1.0", "dax1.0", "ns3", "000000000010")
    assert (bound["hostname"], bound["device_rp_uuid"]) == ("host-a", deps["host-a_region1_6GB"]["rp"])
    await until(lambda: {(e["tag"], e["status"]) for e in nova.delivered_events()} >= {(nova_arq, "completed")},
                "Nova to hear of the bind")

    # standalone: rayborg picks the 6 GB namespace left (region1's only one is taken) and allocates it
    alone_arq, alone_instance = await create_arq(client, "vpmem-6gb"), str(uuid.uuid4())
    alone = await standalone_bind(client, alone_arq, alone_instance)
    assert (alone["state"], alone["attach_handle_type"]) == ("Bound", "PMEM"), alone
    assert alone["device_rp_uuid"] == deps["host-a_region0_6GB"]["rp"] and alone["hostname"] == "host-a"
    assert alone["attach_handle_info"]["namespace"] in ("namespace0.0", "namespace0.1")
    assert alone["attach_handle_info"]["dev"] == "/dev/dax" + alone["attach_handle_info"]["namespace"][9:]
    assert allocations(placement, alone_instance) == {alone["device_rp_uuid"]: {"CUSTOM_PMEM_NAMESPACE_6GB": 1}}
    assert handles_in_use(store) == sorted([bound["attach_handle_info"], alone["attach_handle_info"]], key=json.dumps)

    # a third 6 GB standalone bind still fits; a fourth finds none
    third = await standalone_bind(client, await create_arq(client, "vpmem-6gb"), str(uuid.uuid4()))
    assert third["state"] == "Bound" and third["attach_handle_info"]["namespace"] != \
        alone["attach_handle_info"]["namespace"]
    await no_device_left(client, "vpmem-6gb")

    for arq in (nova_arq, alone_arq, third["uuid"]):
        freed = await unbind(client, arq)
        assert freed["state"] == "Unbound" and freed["attach_handle_type"] in ("", None), freed
    await until(lambda: handles_in_use(store) == [], "every PMEM handle to be free")
    await until(lambda: allocations(placement, alone_instance) == {}, "the standalone allocation to go")
    await until(lambda: standalone_rows(store) == [], "the allocation outbox to empty")
    await asyncio.to_thread(wait_store_matches_placement, store, placement)


# ---- SPDK -----------------------------------------------------------------------------------


async def test_spdk_subsystems_and_vhost_stored_mirrored_and_bound(spdk_env):
    client, store, placement, nova, target = spdk_env
    deps = stored(store)
    nvmf, vhost0, vhost1 = "host-a_nqn_2016-06_io_spdk_cnode1", "host-a_vhost_vhost_0", "host-a_vhost_vhost_1"
    assert {n: (d["type"], d["n"]) for n, d in deps.items()} == {nvmf: ("NVME", 2), vhost0: ("SSD", 1),
                                                                 vhost1: ("SSD", 1)}
    where = {"nqn": "nqn.2016-06.io.spdk:cnode1", "traddr": "10.0.0.5", "trsvcid": "4420", "trtype": "TCP"}
    assert deps[nvmf]["handles"] == [("SPDK", where | {"bdev": "Malloc0", "nsid": "1"}, False),
                                     ("SPDK", where | {"bdev": "Nvme0n1", "nsid": "2"}, False)]
    node = provider_uuid("host-a")
    assert in_placement(placement, deps[nvmf]["rp"]) == (
        node, {"CUSTOM_SPDK_NVMF": (2, 0)}, ["CUSTOM_SPDK", "CUSTOM_SPDK_NVMF_TCP", "OWNER_CYBORG"])
    assert in_placement(placement, deps[vhost0]["rp"]) == (
        node, {"CUSTOM_SPDK_VHOST": (1, 0)}, ["CUSTOM_SPDK", "CUSTOM_SPDK_VHOST_BLOCK", "OWNER_CYBORG"])
    assert in_placement(placement, deps[vhost1]["rp"]) == (
        node, {"CUSTOM_SPDK_VHOST": (1, 0)}, ["CUSTOM_SPDK", "CUSTOM_SPDK_VHOST_SCSI", "OWNER_CYBORG"])
    assert {"nvmf_get_subsystems", "vhost_get_controllers"} <= set(target.calls)

    # Nova-style: a vhost-blk controller, the RP the scheduler chose
    await make_profile(client, "vhost-blk", {"resources:CUSTOM_SPDK_VHOST": "1",
                                             "trait:CUSTOM_SPDK_VHOST_BLOCK": "required"})
    nova_arq, nova_instance = await create_arq(client, "vhost-blk"), str(uuid.uuid4())
    bound = await nova_bind(client, nova_arq, deps[vhost0]["rp"], nova_instance)
    assert (bound["state"], bound["attach_handle_type"]) == ("Bound", "SPDK"), bound
    assert bound["attach_handle_info"] == {"controller": "vhost.0", "kind": "block", "socket": "/var/tmp/vhost.0"}
    await until(lambda: {(e["tag"], e["status"]) for e in nova.delivered_events()} >= {(nova_arq, "completed")},
                "Nova to hear of the bind")

    # standalone: an NVMe-oF namespace over TCP, chosen and allocated by rayborg
    await make_profile(client, "nvmf-tcp", {"resources:CUSTOM_SPDK_NVMF": "1",
                                            "trait:CUSTOM_SPDK_NVMF_TCP": "required"})
    cnode1 = "nqn.2016-06.io.spdk:cnode1"
    assert target.hosts(cnode1) == []
    alone_arq, alone_instance = await create_arq(client, "nvmf-tcp"), str(uuid.uuid4())
    alone = await standalone_bind(client, alone_arq, alone_instance)
    assert (alone["state"], alone["attach_handle_type"], alone["device_rp_uuid"]) == (
        "Bound", "SPDK", deps[nvmf]["rp"]), alone
    # prepared before Bound: the subsystem allows the instance's host NQN
    assert target.hosts(cnode1) == [f"nqn.2014-08.org.nvmexpress:uuid:{alone_instance}"]
    assert alone["attach_handle_info"] in (where | {"bdev": "Malloc0", "nsid": "1"},
                                           where | {"bdev": "Nvme0n1", "nsid": "2"})
    assert allocations(placement, alone_instance) == {deps[nvmf]["rp"]: {"CUSTOM_SPDK_NVMF": 1}}
    assert handles_in_use(store) == sorted([bound["attach_handle_info"], alone["attach_handle_info"]],
                                           key=json.dumps)

    # the vhost-blk controller is taken: a second vhost-blk bind has nothing left (vhost.1 is SCSI)
    await no_device_left(client, "vhost-blk")

    for arq in (nova_arq, alone_arq):
        assert (await unbind(client, arq))["state"] == "Unbound"
    await until(lambda: handles_in_use(store) == [], "every SPDK handle to be free")
    await until(lambda: target.hosts(cnode1) == [], "the unbind to remove the instance's host from cnode1")
    await until(lambda: allocations(placement, alone_instance) == {}, "the standalone allocation to go")
    await until(lambda: standalone_rows(store) == [], "the allocation outbox to empty")
    # freed, the controller binds again
    again = await standalone_bind(client, await create_arq(client, "vhost-blk"), str(uuid.uuid4()))
    assert again["state"] == "Bound" and again["attach_handle_info"]["controller"] == "vhost.0"

    # the target refuses to add the host: the bind ends BindFailed with SPDK's answer, the handle free
    target.answers["nvmf_subsystem_add_host"] = {"code": -32603, "message": "Internal error"}
    refused = await standalone_bind(client, await create_arq(client, "nvmf-tcp"), str(uuid.uuid4()))
    assert refused["state"] == "BindFailed", refused
    why = store.query(lambda s: s.exec(select(ExtARQ.bind_error).where(ExtARQ.uuid == refused["uuid"])).one())
    assert why.startswith("device preparation failed: nvmf_subsystem_add_host: "
                          "Internal error (code -32603)"), why
    assert target.hosts(cnode1) == [] and handles_in_use(store) == [again["attach_handle_info"]]

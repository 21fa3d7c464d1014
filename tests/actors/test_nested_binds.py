"""Binds on a nested FPGA (an Intel card with two PR regions: a parent deployable with one child per
region), through the REST API, the Ray binders and host agent, and the real Placement:

- a standalone bind lands on a region, and its Placement allocation (the standalone_allocations
  outbox, pushed by the binder) is against the region's (leaf) RP, never the card's;
- a profile naming a function (`accel:function_name` / `accel:function_id`) programs the region the
  bind lands on and only it, and a bind to a region that already runs the function programs nothing.

The host's sysfs is `drivers/fixture_trees/intel_fpga/dfl_regions.json` (region 0 runs AFU
d8424dc4..., region 1 is empty); bitstreams come from a local directory with JSON sidecars, as in
test_functions_at_bind.py, and a stand-in fpgaconf writes the image's AFU id into the port it is
pointed at (recording each call)."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from aiohttp.test_utils import TestClient, TestServer
from runtime_helpers import (NOVA, allocations, assert_handles_consistent, create_arq, fresh_store,
                             kill_runtime, make_compute_nodes, nested_fpga_card, resolved, start_runtime,
                             until, wait_store_matches_placement)
from sqlmodel import select

from rayborg.actors.placement_client import PlacementClient
from rayborg.actors.runtime_config import RuntimeConfig
from rayborg.api.app import create_app
from rayborg.api.ray_binder import RayBinder
from rayborg.settings import Settings
from rayborg.store.tables import AttachHandle, Attribute, Deployable, StandaloneAllocation

pytestmark = [pytest.mark.xdist_group("ray"), pytest.mark.slow]

HOSTS = ("host-a", "host-b", "host-c")
CARD = "host-a_0000_3b_00_0"
R0, R1 = f"{CARD}_region0", f"{CARD}_region1"
COMPAT = "CUSTOM_FPGA_REGION_INTEL_9346116D5B5A5BD3AB1B1B7AB25C7CD8"
OLD_AFU = "d8424dc4a4a3c413f89e433683f9040b"  # what region 0 runs from the start
AES_AFU = "f7df405cbd7acf7222f144b0b93acd18"
EMPTY_AFU = "0" * 32
BITSTREAMS = {  # file -> (AFU id the image loads, sidecar metadata)
    "aes.gbs": (AES_AFU, {"bs-uuid": "bs-aes", "function_uuid": AES_AFU, "function_name": "aes"}),
    "nlb.gbs": (OLD_AFU, {"bs-uuid": "bs-nlb", "function_uuid": OLD_AFU, "function_name": "nlb"}),
}
META = {"vendor": "Intel", "board": "PAC_D5005", "version": "1.0", "bs-name": "x",
        "region_uuid": "9346116d5b5a5bd3ab1b1b7ab25c7cd8"}


def trait(afu: str) -> str:
    return f"CUSTOM_FPGA_FUNCTION_ID_INTEL_{afu.upper()}"


@pytest.fixture
async def env(ray_cluster, placement_server, nova, tmp_path):
    root, ports, tool, record = nested_fpga_card(tmp_path)
    images = tmp_path / "bitstreams"
    images.mkdir()
    for name, (afu, meta) in BITSTREAMS.items():
        (images / name).write_text(json.dumps({"afu_id": afu}))
        (images / f"{name}.json").write_text(json.dumps(META | meta))

    store = fresh_store(tmp_path)
    make_compute_nodes(placement_server.url, HOSTS)
    config = RuntimeConfig(
        database_url=store.url, placement_url=placement_server.url, nova_url=nova.url, report_interval=0.5,
        retry_interval=0.2,
        host_overrides={"host-a": {"drivers": ["intel_fpga"], "sysfs_root": str(root), "driver_options": {
            "intel_fpga": {"tool": str(tool)}, "bitstreams": {"dir": str(images)}}},
            "host-b": {"drivers": []}, "host-c": {"drivers": []}})
    await asyncio.to_thread(start_runtime, config)
    placement = PlacementClient(placement_server.url)
    await until(lambda: len(deps(store)) == 4, "the card, its two regions and the single-region card")
    # The runtime's own push of the nested tree is what the oracle expects (regions under the card).
    await asyncio.to_thread(wait_store_matches_placement, store, placement, 60)
    app = create_app(Settings(database_url=store.url, _env_file=None), store,
                     RayBinder(store, config.binder_count))
    async with TestClient(TestServer(app)) as client:
        yield {"client": client, "store": store, "placement": placement, "record": record, "ports": ports}
    await asyncio.to_thread(kill_runtime)
    store.dispose()


def deps(store) -> dict[str, Deployable]:
    return store.query(lambda s: {d.name: d for d in s.exec(select(Deployable))})


def outbox(store) -> list[tuple[str, bool]]:
    return store.query(lambda s: [(r.consumer, r.dirty) for r in s.exec(select(StandaloneAllocation))])


def calls(record) -> list[str]:
    """The PCI function of each fpgaconf run so far."""
    if not record.exists():
        return []
    return [(c := json.loads(line))[c.index("--function") + 1] for line in record.read_text().splitlines()]


async def add_profile(client, name: str, group: dict) -> None:
    resp = await client.post("/v2/device_profiles", json=[{"name": name, "groups": [group]}])
    assert resp.status == 201, await resp.text()


async def patch_bind(client, arq: str, instance: str, rp: str | None = None) -> dict:
    """Bind `arq` on host-a (to `rp`, Nova-style; without it a standalone bind) and wait for its end."""
    ops = [{"op": "add", "path": "/hostname", "value": "host-a"},
           {"op": "add", "path": "/instance_uuid", "value": instance}]
    if rp:
        ops.append({"op": "add", "path": "/device_rp_uuid", "value": rp})
    resp = await client.patch("/v2/accelerator_requests", json={arq: ops}, headers=NOVA)
    assert resp.status == 202, await resp.text()
    return await resolved(client, arq)


async def test_a_standalone_bind_allocates_the_regions_rp(env):
    client, store, placement = env["client"], env["store"], env["placement"]
    await add_profile(client, "region", {"resources:FPGA": "1", f"trait:{COMPAT}": "required"})
    rps = {name: d.rp_uuid for name, d in deps(store).items()}
    bound = {}
    for _ in range(2):
        arq, instance = await create_arq(client, "region"), str(uuid.uuid4())
        shown = await patch_bind(client, arq, instance)
        assert shown["state"] == "Bound", shown
        bound[instance] = shown["device_rp_uuid"]
    # one bind per region, each allocated against its region's leaf RP in the real Placement
    assert sorted(bound.values()) == sorted([rps[R0], rps[R1]])
    for instance, rp in bound.items():
        assert allocations(placement, instance) == {rp: {"FPGA": 1}}
        assert placement._request("GET", f"/allocations/{instance}").json()["consumer_type"] == "RAYBORG"
    # through the outbox: one row per consumer, pushed
    assert sorted(outbox(store)) == sorted((instance, False) for instance in bound)
    usages = placement._request("GET", f"/resource_providers/{rps[R0]}/usages").json()["usages"]
    assert usages == {"FPGA": 1}
    card = placement._request("GET", f"/resource_providers/{rps[CARD]}/allocations").json()["allocations"]
    assert card == {}  # the card holds no inventory, so never an allocation

    # both regions are taken: a third bind asking for the region trait finds nothing free
    arq = await create_arq(client, "region")
    resp = await client.patch("/v2/accelerator_requests", headers=NOVA, json={arq: [
        {"op": "add", "path": "/hostname", "value": "host-a"},
        {"op": "add", "path": "/instance_uuid", "value": str(uuid.uuid4())}]})
    assert resp.status == 409, await resp.text()

    # deleting by instance gives the region's allocation back
    instance, bound_elsewhere = list(bound)
    resp = await client.delete(f"/v2/accelerator_requests?instance={instance}", headers=NOVA)
    assert resp.status == 204
    await until(lambda: allocations(placement, instance) == {}, "the region's allocation to go")
    await until(lambda: [c for c, _ in outbox(store)] == [bound_elsewhere], "its outbox row to go")
    assert_handles_consistent(store)


async def test_a_function_at_bind_programs_that_region_only(env):
    client, store, placement = env["client"], env["store"], env["placement"]
    record, ports = env["record"], env["ports"]
    await add_profile(client, "aes", {"resources:FPGA": "1", "accel:function_name": "aes"})
    await add_profile(client, "nlb", {"resources:FPGA": "1", "accel:function_id": OLD_AFU.upper()})
    before = deps(store)
    rps = {name: d.rp_uuid for name, d in before.items()}

    # region 1 (empty) gets aes: fpgaconf runs once, on the VF carrying region 1's port
    arq, instance = await create_arq(client, "aes"), str(uuid.uuid4())
    shown = await patch_bind(client, arq, instance, rps[R1])
    assert shown["state"] == "Bound", shown
    assert calls(record) == ["0x2"]
    assert ports["2"].read_text().strip() == AES_AFU and ports["1"].read_text().strip() == OLD_AFU
    now = deps(store)
    assert now[R1].bitstream_id == "bs-aes"
    assert now[R0].bitstream_id is None and now[CARD].bitstream_id is None
    # The driver's resweep reports the new function on region 1 only, and PlacementSync mirrors it.
    await until(lambda: trait(AES_AFU) in placement.get_traits(rps[R1])[1],
                "region 1's aes trait in Placement")
    assert trait(EMPTY_AFU) not in placement.get_traits(rps[R1])[1]
    assert trait(OLD_AFU) in placement.get_traits(rps[R0])[1]
    assert trait(AES_AFU) not in placement.get_traits(rps[R0])[1]
    function_ids = store.query(lambda s: dict(s.exec(select(Deployable.name, Attribute.value).join(
        Attribute, Attribute.deployable_id == Deployable.id).where(Attribute.key == "function_id")).all()))
    assert function_ids[R0] == OLD_AFU and function_ids[R1] == AES_AFU

    # region 0 already runs nlb's function (its driver reports the AFU id): Bound, nothing programmed
    shown = await patch_bind(client, await create_arq(client, "nlb"), str(uuid.uuid4()), rps[R0])
    assert shown["state"] == "Bound", shown
    assert calls(record) == ["0x2"] and deps(store)[R0].bitstream_id is None

    # region 1 freed and bound to aes again: it runs aes since our programming, nothing programmed
    resp = await client.delete(f"/v2/accelerator_requests?instance={instance}", headers=NOVA)
    assert resp.status == 204

    def region1_free() -> bool:
        return not store.query(lambda s: s.exec(select(AttachHandle.in_use).where(
            AttachHandle.deployable_id == before[R1].id)).one())

    await until(region1_free, "region 1's handle to be released")
    shown = await patch_bind(client, await create_arq(client, "aes"), str(uuid.uuid4()), rps[R1])
    assert shown["state"] == "Bound", shown
    assert calls(record) == ["0x2"]
    assert ports["1"].read_text().strip() == OLD_AFU
    assert_handles_consistent(store)

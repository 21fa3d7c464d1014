"""FPGA functions at bind (issue 16 item 1): a profile group naming `accel:function_name` /
`accel:function_id` / `accel:bitstream_name` makes the bind find the one bitstream whose metadata
matches (here: the host's local bitstream directory), program it unless the deployable already runs
it, and only then go Bound; no match, several, or a failed programming end BindFailed with the reason
on the ARQ and a failed Nova event. Through the REST API and the real binder and host agent."""

from __future__ import annotations

import asyncio
import json
import random
import uuid

import pytest
import ray
from aiohttp.test_utils import TestClient, TestServer
from factories import add_profile
from runtime_helpers import (NOVA, assert_handles_consistent, create_arq, fresh_store, kill_runtime,
                             make_compute_nodes, resolved, start_runtime, until)
from sqlmodel import select

from rayborg.actors.binder import _slow
from rayborg.actors.runtime_config import NAMESPACE, RuntimeConfig, host_agent_name
from rayborg.api.app import create_app
from rayborg.api.ray_binder import RayBinder
from rayborg.drivers.bitstreams import BitstreamQuery
from rayborg.settings import Settings
from rayborg.store import arq_state, bind_plan
from rayborg.store.tables import Attribute, Deployable, ExtARQ

META = {"vendor": "Fake", "board": "FakeFPGA", "version": "1.0", "bs-name": "x"}
BITSTREAMS = {  # file -> sidecar metadata (the same property names as Glance's images)
    "bs-aes.gbs": {"bs-uuid": "bs-aes", "function_uuid": "a1b2c3", "function_name": "aes"},
    "gzip-1.gbs": {"bs-uuid": "gzip-1", "function_uuid": "9f01", "function_name": "gzip"},
    "gzip-2.gbs": {"bs-uuid": "gzip-2", "function_uuid": "9f02", "function_name": "gzip"},
    "crc.gbs": {"bs-uuid": "crc", "accel:function_id": "cc01"},  # upstream's property name
}


@pytest.fixture
async def env(ray_cluster, placement_server, nova, tmp_path):
    directory = tmp_path / "bitstreams"
    directory.mkdir()
    for name, meta in BITSTREAMS.items():
        (directory / name).write_bytes(b"bitstream")
        (directory / f"{name}.json").write_text(json.dumps(META | meta))
    store = fresh_store(tmp_path)
    make_compute_nodes(placement_server.url, ["host-a"])
    config = RuntimeConfig(
        database_url=store.url, placement_url=placement_server.url, nova_url=nova.url, report_interval=0.5,
        retry_interval=0.2,
        host_overrides={"host-a": {"fake_devices": "fpga:2x2", "driver_options": {
            "fake": {"seed": random.randrange(1, 4000), "fail_program": ["host-a_fake_fpga_1"]},
            "bitstreams": {"dir": str(directory)}}},
            "host-b": {"drivers": []}, "host-c": {"drivers": []}})
    await asyncio.to_thread(start_runtime, config)
    await until(lambda: len(deployables(store)) == 2, "host-a's two FPGAs in the store")
    app = create_app(Settings(database_url=store.url, _env_file=None), store, RayBinder(store, config.binder_count))
    async with TestClient(TestServer(app)) as client:
        yield client, store
    await asyncio.to_thread(kill_runtime)
    store.dispose()


def deployables(store) -> list[Deployable]:
    return store.query(lambda s: list(s.exec(select(Deployable).order_by(Deployable.name))))


async def bind(client, profile: str, dep: Deployable) -> tuple[str, str, dict]:
    """(ARQ, instance, the ARQ once resolved) of a Nova-style bind of `profile` to `dep`."""
    arq, instance = await create_arq(client, profile), str(uuid.uuid4())
    ops = [{"op": "add", "path": "/hostname", "value": "host-a"},
           {"op": "add", "path": "/device_rp_uuid", "value": dep.rp_uuid},
           {"op": "add", "path": "/instance_uuid", "value": instance}]
    resp = await client.patch("/v2/accelerator_requests", json={arq: ops}, headers=NOVA)
    assert resp.status == 202, await resp.text()
    return arq, instance, await resolved(client, arq)


def programs_run() -> int:
    agent = ray.get_actor(host_agent_name("host-a"), namespace=NAMESPACE)
    return ray.get(agent.status.remote(), timeout=30)["programs_run"]


def bind_error(store, arq: str) -> str | None:
    return store.query(lambda s: s.exec(select(ExtARQ.bind_error).where(ExtARQ.uuid == arq)).one())


@pytest.mark.slow
@pytest.mark.xdist_group("ray")
async def test_function_at_bind_programs_once_and_fails_with_the_reason(env, nova):
    client, store = env
    good, failing = deployables(store)  # host-a_fake_fpga_1's programming fails (fail_program)
    profiles = {"aes": {"accel:function_name": "aes"}, "none": {"accel:function_name": "rot13"},
                "gzip": {"accel:function_name": "gzip"}, "crc": {"accel:function_id": "CC01"}}
    for name, keys in profiles.items():
        resp = await client.post("/v2/device_profiles", json=[{"name": name, "groups": [
            {"resources:FPGA": "1", **keys}]}])
        assert resp.status == 201, await resp.text()

    before = await asyncio.to_thread(programs_run)
    first, first_instance, shown = await bind(client, "aes", good)
    assert shown["state"] == "Bound", shown
    assert await asyncio.to_thread(programs_run) == before + 1  # programmed before Bound
    assert store.query(lambda s: s.get(Deployable, good.id).bitstream_id) == "bs-aes"
    # The driver reports the function it now runs (a trait, mirrored into Placement by PlacementSync).
    await until(lambda: "CUSTOM_FPGA_FUNCTION_ID_FAKE_A1B2C3" in store.query(lambda s: list(s.exec(
        select(Attribute.value).where(Attribute.deployable_id == good.id)))), "the function trait")

    second, _, shown = await bind(client, "aes", good)  # the deployable's other handle
    assert shown["state"] == "Bound", shown
    assert await asyncio.to_thread(programs_run) == before + 1  # already runs aes: not programmed again

    failed = {}
    for profile, dep, reason in [
            ("none", failing, "no bitstream matches accel:function_name=rot13"),
            ("gzip", failing, "more than one bitstream matches accel:function_name=gzip: gzip-1, gzip-2"),
            ("crc", failing, "programming bitstream crc for accel:function_id=CC01 failed: simulated programming")]:
        arq, instance, shown = await bind(client, profile, dep)
        assert shown["state"] == "BindFailed", shown
        assert reason in (bind_error(store, arq) or ""), (profile, bind_error(store, arq))
        failed[arq] = instance
    assert await asyncio.to_thread(programs_run) == before + 2  # only crc reached the driver
    assert store.query(lambda s: s.get(Deployable, failing.id).bitstream_id) is None

    def events() -> dict[str, tuple[str, str]]:
        return {e["tag"]: (e["server_uuid"], e["status"]) for e in nova.delivered_events()}

    await until(lambda: set(failed) | {first, second} <= events().keys(), "the Nova events")
    assert {arq: events()[arq] for arq in failed} == {arq: (i, "failed") for arq, i in failed.items()}
    assert events()[first] == (first_instance, "completed") and events()[second][1] == "completed"
    assert_handles_consistent(store)


def test_a_function_makes_the_bind_slow_and_a_bitstream_id_beside_it_fails_it(tmp_path):
    """Only binds whose profile names a function take the binder's slow path (no cost for the
    others); naming a bitstream id too fails the bind, as upstream does."""
    store = fresh_store(tmp_path)
    store.transact(lambda s: s.add(Deployable(name="d", device_id=_device(s), rp_uuid="rp-1")))
    groups = {"plain": {"resources:FPGA": "1"}, "fn": {"resources:FPGA": "1", "accel:function_id": "3AFB"},
              "both": {"resources:FPGA": "1", "accel:function_id": "3AFB", "accel:bitstream_id": str(uuid.uuid4())}}
    arqs = {}
    for name, group in groups.items():
        add_profile(store, name, [group])
        arqs[name] = arq = store.transact(arq_state.create_arqs, name, "p")[0].uuid
        store.transact(arq_state.start_bind, {arq: arq_state.BindTarget("h", "rp-1", str(uuid.uuid4()), "p")})
    plans = store.query(bind_plan.load_many, list(arqs.values()))
    plain, fn, both = (plans[arqs[n]] for n in ("plain", "fn", "both"))
    assert plain.function is None and not _slow(plain, placement=False)
    assert fn.function == BitstreamQuery(function_id="3AFB") and fn.error is None and _slow(fn, placement=False)
    assert both.error == ("accel:bitstream_id and accel:function_id=3AFB in one group: name one bitstream")
    store.dispose()


def _device(session) -> int:
    from rayborg.store.tables import Device

    device = Device(type="FPGA", vendor="0xabcd", model="m", hostname="h", std_board_info_key="k")
    session.add(device)
    session.flush()
    return device.id

"""Quota usage through the whole runtime while binders die (issue 17 item 1): several projects bind
(Nova-style, naming the RP, and standalone), unbind and delete ARQs concurrently through the REST
front door against real binder actors, under a `[quota]` table low enough that some binds are
refused (403, leaving the ARQ Initial and nothing counted), while the binders are killed three
times (ray.kill and kill -9) at points set by how many binds were sent. Once they are back and
every ARQ has left BindStarted, the counters equal what the ARQ rows hold, every project's usage
equals what its Bound (used) and BindStarted (reserved) ARQs charge, and no project is above a
limit. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import uuid
from collections import Counter

import pytest
import ray
from aiohttp.test_utils import TestClient, TestServer
from sqlmodel import select

from rayborg.actors.placement_client import PlacementClient
from rayborg.actors.runtime_config import NAMESPACE, RuntimeConfig, binder_name
from rayborg.api.app import create_app
from rayborg.api.ray_binder import RayBinder
from rayborg.settings import Settings
from rayborg.store import quotas
from rayborg.store.engine import Store
from rayborg.store.migrate import upgrade
from rayborg.store.tables import ARQState, Deployable, Device, DeviceProfile, ExtARQ
from runtime_helpers import (arq_states, assert_handles_consistent, kill_runtime, make_compute_nodes,
                             start_runtime, wait_for, wait_store_matches_placement)

pytestmark = [pytest.mark.xdist_group("ray"), pytest.mark.slow]
HOSTS = ("host-a", "host-b", "host-c")
ADMIN = {"X-Project-Id": "admin", "X-User-Id": "admin", "X-Roles": "admin"}
LIMITS = {"default": -1, "FPGA": 4, "PGPU": 2}
PROFILES = {"fpga": "FPGA", "gpu": "PGPU"}  # profile -> its one resource class
WORKERS = ["pa", "pa", "pb", "pb", "pb", "pb", "pc", "pc", "pc"]  # pa's FPGA binds are all refused
ROUNDS = 10  # binds per worker: 90 in all
# after a bind is accepted: most give their devices back (at once, racing the binder, or once resolved)
STEPS = ["unbind now"] * 2 + ["delete now"] * 2 + ["wait, unbind"] * 2 + ["wait, delete"] * 2 + ["wait"]
KILLS = [(15, 0, "ray.kill"), (40, 1, "kill -9"), (65, 0, "kill -9")]  # (after N binds sent, binder, how)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'rayborg.db'}"
    return request.getfixturevalue("postgres_server").create_database()


@pytest.fixture
async def env(ray_cluster, placement_server, nova, db_url):
    store = Store(db_url)
    upgrade(store.engine)
    make_compute_nodes(placement_server.url, HOSTS)
    # 16 FPGA handles on 5 deployables, 4 PGPU handles on 2
    hosts = {"host-a": ("fpga:3x4,gpu:1x2", 11), "host-b": ("fpga:2x2,gpu:1x2", 23)}
    config = RuntimeConfig(database_url=db_url, placement_url=placement_server.url, nova_url=nova.url,
                           report_interval=0.5, retry_interval=0.2, host_overrides={
                               **{h: {"fake_devices": spec, "driver_options": {"fake": {"seed": seed}}}
                                  for h, (spec, seed) in hosts.items()},
                               "host-c": {"drivers": []}})
    await asyncio.to_thread(start_runtime, config)
    await asyncio.to_thread(wait_for, lambda: len(_deployables(store)) == 7, 90, 0.2, "7 deployables")
    # a standalone bind allocates in Placement: the RPs must be there first
    await asyncio.to_thread(wait_store_matches_placement, store, PlacementClient(placement_server.url))
    binder = RayBinder(store, config.binder_count)
    app = create_app(Settings(database_url=db_url, quota=LIMITS, _env_file=None), store, binder)
    try:
        async with TestClient(TestServer(app)) as client:
            yield client, store, binder, config
    finally:
        await asyncio.to_thread(kill_runtime)
        store.dispose()


def _deployables(store) -> list[tuple[str, str, str]]:
    """(hostname, RP uuid, resource class) of every deployable."""
    rows = store.query(lambda s: list(s.exec(select(Device.hostname, Deployable.rp_uuid, Device.type)
                                             .join(Device, Device.id == Deployable.device_id))))
    return sorted((host, rp, "PGPU" if kind == "GPU" else kind) for host, rp, kind in rows)


def _headers(project: str) -> dict[str, str]:
    return {"X-Project-Id": project, "X-User-Id": f"u-{project}", "X-Roles": "member",
            "X-Service-Roles": "service"}


def _held(session) -> list[tuple[str, str, str]]:
    """(project, profile name, state) of every ARQ."""
    return list(session.exec(select(ExtARQ.project_id, DeviceProfile.name, ExtARQ.state)
                             .join(DeviceProfile, DeviceProfile.id == ExtARQ.device_profile_id)))


def _errors(session) -> list[tuple[str, str, str | None]]:
    return list(session.exec(select(ExtARQ.uuid, ExtARQ.state, ExtARQ.bind_error)))


def _binder_pid(index: int) -> int:
    return ray.get(ray.get_actor(binder_name(index), namespace=NAMESPACE).status.remote(), timeout=60)["pid"]


def _kill(index: int, how: str) -> None:
    """Kill binder `index` (Ray restarts it) and wait until it is back with a new process."""
    handle = ray.get_actor(binder_name(index), namespace=NAMESPACE)
    pid = _binder_pid(index)
    if how == "ray.kill":
        ray.kill(handle, no_restart=False)
    else:
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: _binder_pid(index) != pid, timeout=60, what=f"binder {index} back after {how}")


async def test_usage_equals_bound_plus_in_flight_after_binds_unbinds_deletes_and_binder_kills(env):
    client, store, binder, config = env
    assert config.binder_count == 2
    for name, rc in PROFILES.items():
        resp = await client.post("/v2/device_profiles", headers=ADMIN,
                                 json=[{"name": name, "groups": [{f"resources:{rc}": "1"}]}])
        assert resp.status == 201, await resp.text()
    deployables = _deployables(store)
    # pa holds its whole FPGA quota from the start (standalone binds it never lets go of): every FPGA
    # bind of pa in the mix is refused
    pinned = []
    for _ in range(LIMITS["FPGA"]):
        resp = await client.post("/v2/accelerator_requests", json={"device_profile_name": "fpga"},
                                 headers=_headers("pa"))
        pinned.append((await resp.json())["arqs"][0]["uuid"])
        resp = await client.patch("/v2/accelerator_requests", headers=_headers("pa"), json={
            pinned[-1]: [{"op": "add", "path": "/instance_uuid", "value": str(uuid.uuid4())}]})
        assert resp.status == 202, await resp.text()
    await asyncio.to_thread(wait_for, lambda: {arq_states(store)[u] for u in pinned} == {ARQState.BOUND},
                            60, 0.1, "pa's FPGAs bound", lambda: str(store.query(_errors)))
    sent, outcomes, fate = 0, Counter(), {}
    triggers = {n: asyncio.Event() for n, _, _ in KILLS}

    async def state_of(arq: str, project: str) -> str:
        resp = await client.get(f"/v2/accelerator_requests/{arq}", headers=_headers(project))
        assert resp.status == 200, await resp.text()
        return (await resp.json())["state"]

    async def resolved(arq: str) -> None:
        # the ARQ is read through the store in a thread: polling with a deadline, not a sleep
        await asyncio.to_thread(wait_for, lambda: arq_states(store).get(arq) != ARQState.BIND_STARTED,
                                60, 0.05, f"ARQ {arq} to leave BindStarted")

    async def worker(index: int, project: str) -> None:
        nonlocal sent
        rng = random.Random(1000 + index)
        headers = _headers(project)
        for _ in range(ROUNDS):
            profile = rng.choice(list(PROFILES))
            resp = await client.post("/v2/accelerator_requests", json={"device_profile_name": profile},
                                     headers=headers)
            assert resp.status == 201, await resp.text()
            arq = (await resp.json())["arqs"][0]["uuid"]
            ops = [{"op": "add", "path": "/instance_uuid", "value": str(uuid.UUID(int=rng.getrandbits(128)))}]
            if rng.random() < 0.6:  # Nova-style: the scheduler's pick (maybe full: then BindFailed)
                host, rp, _ = rng.choice([d for d in deployables if d[2] == PROFILES[profile]])
                ops += [{"op": "add", "path": "/hostname", "value": host},
                        {"op": "add", "path": "/device_rp_uuid", "value": rp}]
            resp = await client.patch("/v2/accelerator_requests", json={arq: ops}, headers=headers)
            sent += 1
            if sent in triggers:
                triggers[sent].set()
            outcomes[resp.status] += 1
            if resp.status == 403:  # over quota: refused before anything changed
                assert "Quota exceeded" in await resp.text()
                assert await state_of(arq, project) == ARQState.INITIAL
                step = rng.choice(["delete", "keep"])
            elif resp.status == 409:  # standalone, nothing free
                step = rng.choice(["delete", "keep"])
            else:
                assert resp.status == 202, await resp.text()
                step = rng.choice(STEPS)
            fate[arq] = (resp.status, step)
            if step.startswith("wait"):
                await resolved(arq)
            if "unbind" in step:
                resp = await client.patch("/v2/accelerator_requests", headers=headers,
                                          json={arq: [{"op": "remove", "path": "/hostname"}]})
                assert resp.status == 202, await resp.text()
            elif "delete" in step:
                resp = await client.delete(f"/v2/accelerator_requests?arqs={arq}", headers=headers)
                assert resp.status == 204, await resp.text()

    async def killer() -> list[tuple[int, str]]:
        done = []
        for n, index, how in KILLS:
            await triggers[n].wait()
            await asyncio.to_thread(_kill, index, how)
            done.append((index, how))
        return done

    kills = asyncio.ensure_future(killer())
    try:
        await asyncio.gather(*(worker(i, p) for i, p in enumerate(WORKERS)))
        assert sent == len(WORKERS) * ROUNDS
        assert await asyncio.wait_for(kills, 120) == [(i, how) for _, i, how in KILLS]
    finally:
        kills.cancel()

    # the binders are back; every bind they were handed (again) resolves
    await asyncio.to_thread(wait_for, lambda: ARQState.BIND_STARTED not in arq_states(store).values(),
                            90, 0.2, "every bind to resolve")
    await asyncio.wait_for(binder.drain(), 120)
    held = store.query(_held)
    assert {s for _, _, s in held} <= {ARQState.INITIAL, ARQState.BOUND, ARQState.BIND_FAILED,
                                        ARQState.UNBOUND}, Counter(s for _, _, s in held)
    summary = (outcomes, Counter((p, s) for p, _, s in held))
    assert outcomes[403] > 0 and outcomes[202] > 0, summary
    states = arq_states(store)
    assert {states[u] for u in pinned} == {ARQState.BOUND}
    # no re-driven bind brought back what was unbound or deleted, even one unbound mid-bind
    assert {states.get(a) for a, (_, step) in fate.items() if "unbind" in step} == {ARQState.UNBOUND}
    assert not [a for a, (_, step) in fate.items() if "delete" in step and a in states]
    assert any(s == ARQState.BOUND for _, _, s in held)
    assert_handles_consistent(store)

    # the counters are what the rows say, and each project's usage is its Bound + BindStarted ARQs
    assert store.query(quotas.counters) == store.query(quotas.counters_from_rows)
    expected: dict[tuple[str, str], Counter] = {}
    for project, profile, state in held:
        kind = {ARQState.BOUND: "used", ARQState.BIND_STARTED: "reserved"}.get(state)
        if kind:
            expected.setdefault((project, PROFILES[profile]), Counter())[kind] += 1
    for project in sorted(set(WORKERS)):
        got = {(u.project_id, u.resource): (u.used, u.reserved) for u in store.query(quotas.usage, project)}
        want = {k: (c["used"], c["reserved"]) for k, c in expected.items() if k[0] == project}
        assert got == want, (project, summary)
        for (_, rc), (used, reserved) in got.items():
            assert used + reserved <= LIMITS[rc], (project, rc, used, reserved)
    # and the API's report says the same
    resp = await client.get("/v2/quotas/usage", headers=ADMIN)
    assert resp.status == 200, await resp.text()
    reported = {(q["project_id"], q["resource"]): (q["used"], q["reserved"])
                for q in (await resp.json())["quota_usages"]}
    assert reported == {k: (c["used"], c["reserved"]) for k, c in expected.items()
                        if c["used"] or c["reserved"]}

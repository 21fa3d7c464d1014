"""Faults the runtime must survive: each actor kind killed (ray.kill and kill -9) in the middle of
a bind, a report or a programming call, with evidence that the phase is under way before the kill;
Nova failing; and a crowd of concurrent binds on few devices. After every fault the same invariants
must hold (`runtime_helpers.assert_recovered`): every ARQ Bound or BindFailed, handles consistent,
store and Placement in full agreement, Nova told of every outcome."""

import asyncio
import contextlib
import os
import random
import signal
import sqlite3
import time

import pytest
import ray
from sqlalchemy.engine import make_url
from sqlmodel import select

from factories import add_profile
from rayborg.actors.binder import binder_index
from rayborg.actors.placement_client import PlacementClient
from rayborg.actors.runtime_config import (NAMESPACE, PLACEMENT_SYNC_NAME, RuntimeConfig, binder_name,
                                           host_agent_name)
from rayborg.actors.supervisor import Supervisor
from rayborg.api.ray_binder import RayBinder
from rayborg.store import arq_state
from rayborg.store.tables import Deployable
from runtime_helpers import (arq_states, assert_recovered, fresh_store, kill_runtime, make_compute_nodes, new_instance,
                             wait_for)

pytestmark = [pytest.mark.xdist_group("ray"), pytest.mark.slow]
HOSTS = ("host-a", "host-b", "host-c")
KILLS = ["ray.kill", "kill -9"]
BITSTREAM = "9f4cbb0a-3c84-4a4c-8a2b-1d5b6f0e2a11"


@pytest.fixture
def runtime(ray_cluster, placement_server, nova, tmp_path):
    """`runtime(specs, fake_options=None, agents=True)` starts store, compute nodes, PlacementSync,
    binders and (unless `agents` is False, for a test that holds up their first reports) the
    HostAgents, and returns (store, config, supervisor); the actors are killed after the test."""
    def start(specs: dict[str, str], fake_options: dict | None = None, agents: bool = True):
        store = fresh_store(tmp_path)
        make_compute_nodes(placement_server.url, HOSTS)
        seed = random.randrange(1, 4000)
        config = RuntimeConfig(
            database_url=store.url, placement_url=placement_server.url, nova_url=nova.url,
            report_interval=0.5, retry_interval=0.2,
            host_overrides={h: {"fake_devices": specs[h], "driver_options": {
                "fake": {"seed": seed + 7 * i, **(fake_options or {})}}} if h in specs else {"drivers": []}
                for i, h in enumerate(HOSTS)})
        sup = Supervisor(config)
        sup.start_singletons()
        if agents:
            sup.reconcile()
        return store, config, sup

    yield start
    kill_runtime()


@pytest.fixture
def placement(placement_server) -> PlacementClient:
    return PlacementClient(placement_server.url)


def _actor(name: str):
    return ray.get_actor(name, namespace=NAMESPACE)


def _deployables(store, count):
    wait_for(lambda: store.query(lambda s: len(list(s.exec(select(Deployable))))) == count, what="devices")
    return store.query(lambda s: [(d.name.split("_")[0], d.rp_uuid)
                                  for d in s.exec(select(Deployable).order_by(Deployable.name))])


def _bitstreams(session) -> set[str | None]:
    return set(session.exec(select(Deployable.bitstream_id)))


def _instance_of_binder(index: int, count: int) -> str:
    """A new instance whose ARQs binder `index` owns."""
    while binder_index(instance := new_instance(), count) != index:
        pass
    return instance


def _start_binds(store, targets: list[tuple[str, str]], groups: list[dict] | None = None,
                 binder: int | None = 0, count: int = 2) -> list[str]:
    """One ARQ per (host, rp), each for its own instance (owned by binder `binder`; None: any),
    moved to BindStarted as the API does."""
    profile = f"dp-{new_instance()[:8]}"
    add_profile(store, profile, groups or [{"resources:FPGA": "1"}])
    uuids = []
    for host, rp in targets:
        arq = store.transact(arq_state.create_arqs, profile, "proj")[0]
        instance = new_instance() if binder is None else _instance_of_binder(binder, count)
        target = arq_state.BindTarget(host, rp, instance, "proj")
        store.transact(arq_state.start_bind, {arq.uuid: target})
        uuids.append(arq.uuid)
    return uuids


def _status(handle) -> dict:
    return ray.get(handle.status.remote(), timeout=30)


def _kill(handle, how: str) -> int:
    """Kill the actor the way `how` says (Ray restarts it); returns the pid it had."""
    pid = _status(handle)["pid"]
    if how == "ray.kill":
        ray.kill(handle, no_restart=False)
    else:
        os.kill(pid, signal.SIGKILL)
    return pid


def _came_back(handle, pid: int) -> dict:
    return wait_for(lambda: (s := _status(handle))["pid"] != pid and s, timeout=60, what="the actor back")


@contextlib.contextmanager
def _store_write_locked(store):
    """Hold the store's SQLite write lock: every writer waits (up to its 5 s busy timeout), so an
    actor that got as far as writing is pinned in the middle of its work until this exits."""
    conn = sqlite3.connect(make_url(store.url).database, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def _wait_for_report(sync, hostname: str | None = None, phase: str | None = None) -> list:
    """PlacementSync's reports in progress, once one of `hostname` in `phase` (None: any) is."""
    def seen():
        return [r for r in _status(sync)["reports"] if hostname in (None, r[0]) and phase in (None, r[1])]

    return wait_for(seen, timeout=60, interval=0.02, what=f"a report of {hostname or 'any host'} {phase}")


@pytest.mark.parametrize("how", KILLS)
def test_binder_killed_mid_bind(runtime, placement, nova, how):
    store, config, _ = runtime({"host-a": "fpga:2x4", "host-b": "fpga:1x4"})
    deps = _deployables(store, 3)
    arqs = _start_binds(store, [deps[i % 3] for i in range(40)])  # 40 asks for 12 handles, all binder 0's
    binder = _actor(binder_name(0))
    with _store_write_locked(store):  # the binds cannot commit: the kill lands mid-bind
        refs = [binder.bind.remote([u]) for u in arqs]
        _status(binder)  # one caller's calls start in order: every bind above has begun
        time.sleep(0.3)  # and reached its blocked transaction
        assert set(arq_states(store).values()) == {"BindStarted"}  # none could finish
        pid = _kill(binder, how)
    states = assert_recovered(store, placement, nova)
    assert list(states.values()).count("Bound") == 12 and len(states) == 40
    _came_back(binder, pid)
    ray.wait(refs, num_returns=len(refs), timeout=60)


@pytest.mark.parametrize("phase", ["applying", "pushing"])
@pytest.mark.parametrize("how", KILLS)
def test_placement_sync_killed_mid_report(runtime, placement, nova, how, phase):
    """Killed while the hosts' first reports are applied to the store (held there by the store's
    write lock) or while their changes are pushed to Placement: the HostAgents' retried report
    calls and the store's dirty marks bring store and Placement into agreement."""
    store, config, sup = runtime({"host-a": "fpga:20x2", "host-b": "gpu:20"}, agents=False)
    sync = _actor(PLACEMENT_SYNC_NAME)
    with _store_write_locked(store) if phase == "applying" else contextlib.nullcontext():
        sup.reconcile()
        _wait_for_report(sync, phase=phase)
        pid = _kill(sync, how)
    _deployables(store, 40)
    assert_recovered(store, placement, nova)
    _came_back(sync, pid)


@pytest.mark.parametrize("how", KILLS)
def test_host_agent_killed_mid_report(runtime, placement, nova, how):
    """host-a's agent dies while its first report is in PlacementSync (held there by the store's
    write lock): the report it left still lands, the new agent reports again, and host-a binds."""
    store, config, sup = runtime({"host-a": "fpga:20x1", "host-b": "fpga:2x1"}, agents=False)
    sync = _actor(PLACEMENT_SYNC_NAME)
    with _store_write_locked(store):
        sup.reconcile()
        _wait_for_report(sync, hostname="host-a")  # the agent is awaiting this report call
        agent = _actor(host_agent_name("host-a"))
        pid = _kill(agent, how)
    _came_back(agent, pid)
    wait_for(lambda: _status(agent)["reports_sent"] >= 1, timeout=60, what="the new agent's own report")
    deps = _deployables(store, 22)
    arqs = _start_binds(store, [d for d in deps if d[0] == "host-a"][:3], binder=None)
    assert asyncio.run(RayBinder(store, config.binder_count).bind(arqs)) == dict.fromkeys(arqs, "Bound")
    assert_recovered(store, placement, nova)


@pytest.mark.parametrize("how", KILLS)
@pytest.mark.parametrize("kind", ["binder", "placement_sync", "host_agent"])
def test_killed_mid_programming(runtime, placement, nova, kind, how):
    """Three binds that each program an FPGA first (the fake takes its time): the binder that runs
    them, PlacementSync or host-a's agent dies while the agent programs. The binds end Bound
    (a restarted binder resumes them, a restarted agent gets the retried call) with the bitstreams
    recorded."""
    store, config, _ = runtime({"host-a": "fpga:3x1"}, fake_options={"program_seconds": 1.5})
    deps = _deployables(store, 3)
    arqs = _start_binds(store, deps, groups=[{"resources:FPGA": "1", "accel:bitstream_id": BITSTREAM}])
    binder, agent = _actor(binder_name(0)), _actor(host_agent_name("host-a"))
    victim = {"binder": binder, "placement_sync": _actor(PLACEMENT_SYNC_NAME), "host_agent": agent}[kind]
    ref = binder.bind.remote(arqs)
    wait_for(lambda: _status(agent)["programming"], timeout=30, interval=0.05, what="programming to start")
    pid = _kill(victim, how)
    assert set(assert_recovered(store, placement, nova).values()) == {"Bound"}
    _came_back(victim, pid)
    wait_for(lambda: store.query(_bitstreams) == {BITSTREAM}, timeout=30, what="the bitstreams in the store")
    assert _status(agent)["programming"] == []
    ray.wait([ref], timeout=60)


def test_nova_failing_is_retried_and_the_arq_still_resolves(runtime, placement, nova):
    store, config, _ = runtime({"host-a": "fpga:1x2"})
    (dep,) = _deployables(store, 1)
    nova.fail_next = 3
    (arq,) = _start_binds(store, [dep])
    instance = store.query(lambda s: arq_state.lock_arqs(s, [arq])[0].instance_uuid)
    binder = _actor(binder_name(binder_index(instance, config.binder_count)))
    assert ray.get(binder.bind.remote([arq])) == {arq: "Bound"}
    assert_recovered(store, placement, nova)
    assert [c["failed"] for c in nova.calls] == [True, True, True, False]
    assert nova.delivered_events()[0] == {"name": "accelerator-request-bound", "server_uuid": instance,
                                          "tag": arq, "status": "completed"}


def test_100_concurrent_binds_on_10_devices_over_3_hosts(runtime, placement, nova):
    store, config, _ = runtime({"host-a": "fpga:4x1", "host-b": "fpga:3x1", "host-c": "fpga:3x1"})
    deps = _deployables(store, 10)
    arqs = _start_binds(store, [deps[i % 10] for i in range(100)], binder=None)
    binder = RayBinder(store, config.binder_count)

    async def go():
        await asyncio.gather(*(binder.submit([u]) for u in arqs))
        await binder.drain()

    asyncio.run(go())
    states = list(assert_recovered(store, placement, nova).values())
    assert states.count("Bound") == 10 and states.count("BindFailed") == 90
    assert len(nova.delivered_events()) >= 100


def test_nova_refusing_one_instance_retries_only_that_instance(runtime, placement, nova):
    """Events of several instances go in one call; Nova's 207 refusing one instance's events (409
    here) has only those sent again, and the others are never sent twice."""
    store, config, _ = runtime({"host-a": "fpga:2x1"})
    deps = _deployables(store, 2)
    arqs = _start_binds(store, deps)  # both owned by binder 0
    instances = store.query(lambda s: [a.instance_uuid for a in arq_state.lock_arqs(s, arqs)])
    refused = instances[1]
    nova.event_codes = {refused: 409}
    assert ray.get(_actor(binder_name(0)).bind.remote(arqs)) == {u: "Bound" for u in arqs}
    wait_for(lambda: any(e["server_uuid"] == refused for c in nova.calls for e in c["body"]["events"]),
             what="the refused instance's first attempt")
    nova.event_codes = {}
    assert_recovered(store, placement, nova)
    sent = [e["server_uuid"] for c in nova.calls for e in c["body"]["events"]]
    assert sent.count(instances[0]) == 1 and sent.count(refused) >= 2

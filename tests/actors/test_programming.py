"""FPGA programming through the runtime: a bind whose profile names a bitstream programs the
deployable first; a HostAgent killed mid-programming comes back and finishes the call."""

import os
import random
import signal

import pytest
import ray
from sqlmodel import select

from factories import add_profile
from rayborg.actors.binder import binder_index
from rayborg.actors.runtime_config import NAMESPACE, RuntimeConfig, binder_name, host_agent_name
from rayborg.store import arq_state
from rayborg.store.tables import Deployable
from runtime_helpers import (arq_states, assert_handles_consistent, fresh_store, kill_runtime, make_compute_nodes,
                             new_instance, start_runtime, wait_for)

pytestmark = [pytest.mark.xdist_group("ray"), pytest.mark.slow]
BITSTREAM = "9f4cbb0a-3c84-4a4c-8a2b-1d5b6f0e2a11"


@pytest.fixture
def fpga_runtime(ray_cluster, placement_server, nova, tmp_path):
    store = fresh_store(tmp_path)
    make_compute_nodes(placement_server.url, ["host-a"])
    config = RuntimeConfig(
        database_url=store.url, placement_url=placement_server.url, nova_url=nova.url, report_interval=0.5,
        retry_interval=0.2, log_format="json",
        host_overrides={"host-a": {"fake_devices": "fpga:2x2", "driver_options": {"fake": {
            "seed": random.randrange(1, 4000), "program_seconds": 1.5,
            "fail_program": []}}}, "host-b": {"drivers": []}, "host-c": {"drivers": []}})
    start_runtime(config)
    wait_for(lambda: store.query(lambda s: len(list(s.exec(select(Deployable))))) == 2, what="devices")
    yield store, config
    kill_runtime()
    store.dispose()


def _bind(store, config, profile_groups, dep):
    add_profile(store, "fpga-bits", profile_groups)
    arq = store.transact(arq_state.create_arqs, "fpga-bits", "proj")[0].uuid
    instance = new_instance()
    store.transact(arq_state.start_bind, {arq: arq_state.BindTarget("host-a", dep.rp_uuid, instance, "proj")})
    binder = ray.get_actor(binder_name(binder_index(instance, config.binder_count)), namespace=NAMESPACE)
    return arq, binder


def test_bind_programs_the_bitstream_first(fpga_runtime):
    store, config = fpga_runtime
    dep = store.query(lambda s: s.exec(select(Deployable)).first())
    arq, binder = _bind(store, config, [{"resources:FPGA": "1", "accel:bitstream_id": BITSTREAM}], dep)
    assert ray.get(binder.bind.remote([arq]), timeout=60) == {arq: "Bound"}
    assert store.query(lambda s: s.get(Deployable, dep.id).bitstream_id) == BITSTREAM
    # The actors log JSON lines (config.log_format) that name the ARQ, host and deployable.
    wait_for(lambda: _json_log_lines(arq), timeout=20, what="the binder's log line for the ARQ")
    (line,) = _json_log_lines(arq)[:1]
    assert line["host"] == "host-a" and line["deployable"] == dep.name and line["logger"] == "rayborg.binder"
    programmed = [r for r in _json_log_lines(None) if r.get("message", "").startswith("host host-a: programmed")]
    assert programmed and programmed[-1]["deployable"] == dep.name



def test_the_same_arq_asked_twice_is_bound_once(fpga_runtime):
    """A restarted binder resumes the ARQs it owned while Ray retries the call the dead one was
    working on: the two asks share one bind (both see Bound, the deployable is programmed once)."""
    store, config = fpga_runtime
    dep = store.query(lambda s: s.exec(select(Deployable).order_by(Deployable.name)).first())
    arq, binder = _bind(store, config, [{"resources:FPGA": "1", "accel:bitstream_id": BITSTREAM}], dep)
    before = ray.get(binder.status.remote(), timeout=30)
    first, second = binder.bind.remote([arq]), binder.bind.remote([arq])
    assert ray.get([first, second], timeout=60) == [{arq: "Bound"}, {arq: "Bound"}]
    after = ray.get(binder.status.remote(), timeout=30)
    assert after["binds_done"] == before["binds_done"] + 1 and after["binds_in_progress"] == 0
    assert_handles_consistent(store)

def _json_log_lines(arq: str | None) -> list[dict]:
    """The JSON log records of this Ray session's workers (about `arq` when given)."""
    import json
    from pathlib import Path

    logs = Path(ray._private.worker.global_worker.node.get_logs_dir_path())
    found = []
    for path in logs.glob("worker-*"):
        for text in path.read_text(errors="replace").splitlines():
            if text.startswith("{"):
                try:
                    record = json.loads(text)
                except ValueError:
                    continue
                if isinstance(record, dict) and (arq is None or record.get("arq") == arq):
                    found.append(record)
    return found


@pytest.mark.parametrize("how", ["ray.kill", "kill -9"])
def test_host_agent_killed_mid_programming_finishes_the_call(fpga_runtime, how):
    store, config = fpga_runtime
    dep = store.query(lambda s: s.exec(select(Deployable)).first())
    agent = ray.get_actor(host_agent_name("host-a"), namespace=NAMESPACE)
    pid = ray.get(agent.status.remote())["pid"]
    arq, binder = _bind(store, config, [{"resources:FPGA": "1", "accel:bitstream_id": BITSTREAM}], dep)
    ref = binder.bind.remote([arq])
    wait_for(lambda: ray.get(agent.status.remote())["programming"], timeout=20, interval=0.05,
             what="programming to start")
    if how == "ray.kill":
        ray.kill(agent, no_restart=False)
    else:
        os.kill(pid, signal.SIGKILL)
    assert ray.get(ref, timeout=90) == {arq: "Bound"}  # the call was retried on the new agent
    status = ray.get(agent.status.remote())
    assert status["pid"] != pid and status["programming"] == []
    assert arq_states(store) == {arq: "Bound"}
    assert_handles_consistent(store)


def test_failed_programming_fails_the_bind_cleanly(fpga_runtime):
    store, config = fpga_runtime
    dep = store.query(lambda s: s.exec(select(Deployable)).first())
    agent = ray.get_actor(host_agent_name("host-a"), namespace=NAMESPACE)
    result = ray.get(agent.program.remote("fake", "host-a_no_such_fpga", BITSTREAM), timeout=30)
    assert result["ok"] is False and "host-a_no_such_fpga" in result["error"]
    arq, binder = _bind(store, config, [{"resources:FPGA": "1", "accel:bitstream_id": BITSTREAM}], dep)
    store.transact(lambda s: setattr(s.get(Deployable, dep.id), "driver_name", "intel_fpga"))  # not on this host
    assert ray.get(binder.bind.remote([arq]), timeout=60) == {arq: "BindFailed"}
    assert_handles_consistent(store)


def test_api_programming_requests_end_done_or_failed(fpga_runtime):
    import asyncio

    from rayborg.api.ray_programmer import RayProgrammer
    from rayborg.store.queries.deployables import record_program_request
    from rayborg.store.tables import ProgramRequest

    store, config = fpga_runtime
    deps = store.query(lambda s: list(s.exec(select(Deployable).order_by(Deployable.name))))
    good = store.transact(record_program_request, deps[0].uuid, BITSTREAM, "p").program.uuid
    # A deployable whose driver is not on its host fails cleanly, with the reason recorded.
    store.transact(lambda s: setattr(s.get(Deployable, deps[1].id), "driver_name", "xilinx_fpga"))
    bad = store.transact(record_program_request, deps[1].uuid, BITSTREAM, "p").program.uuid
    programmer = RayProgrammer(store)

    async def run():
        await programmer.submit(good)
        await programmer.submit(bad)
        await programmer.drain()

    asyncio.run(run())
    rows = store.query(lambda s: {r.uuid: (r.state, r.error) for r in s.exec(select(ProgramRequest))})
    assert rows[good] == ("done", None)
    assert rows[bad][0] == "failed" and "xilinx_fpga" in rows[bad][1]
    wait_for(lambda: store.query(lambda s: s.get(Deployable, deps[0].id).bitstream_id) == BITSTREAM,
             what="the bitstream in the store")


def test_one_programming_per_deployable_and_a_cancelled_caller_leaves_it_marked(fpga_runtime):
    """A binder that restarted asks again while the first call still runs: the second call joins it
    (same result, one run). Another bitstream waits its turn. A caller that gives up (ray.cancel)
    does not stop the tool: the deployable stays marked as programming until the tool is done."""
    store, _ = fpga_runtime
    name = store.query(lambda s: s.exec(select(Deployable).order_by(Deployable.name)).first()).name
    agent = ray.get_actor(host_agent_name("host-a"), namespace=NAMESPACE)
    first, again = (agent.program.remote("fake", name, BITSTREAM) for _ in range(2))
    first, again = ray.get([first, again], timeout=60)
    assert first["ok"] and first == again  # the very same run's result, duration included

    other = "0c3f1b52-6f1e-4f0a-9d59-1a1d2a7e0b77"
    calls = [agent.program.remote("fake", name, bs) for bs in (BITSTREAM, other)]
    results = ray.get(calls, timeout=60)
    assert all(r["ok"] for r in results) and results[0] != results[1]  # two runs, one after the other

    ref = agent.program.remote("fake", name, BITSTREAM)
    wait_for(lambda: ray.get(agent.status.remote())["programming"], timeout=20, interval=0.05,
             what="programming to start")
    ray.cancel(ref)
    with pytest.raises((ray.exceptions.TaskCancelledError, ray.exceptions.RayTaskError)):
        ray.get(ref, timeout=30)
    assert ray.get(agent.status.remote())["programming"] == [name]  # the tool still runs
    wait_for(lambda: ray.get(agent.status.remote())["programming"] == [], timeout=20, interval=0.05,
             what="the tool to finish")


def test_the_loaded_bitstream_survives_a_host_agent_restart(fpga_runtime):
    """The fake driver, like Inspur's, cannot read back what is loaded: the restarted agent reports
    no bitstream, and the store keeps the one programmed (the next bind does not reprogram)."""
    store, _ = fpga_runtime
    dep = store.query(lambda s: s.exec(select(Deployable).order_by(Deployable.name)).first())
    agent = ray.get_actor(host_agent_name("host-a"), namespace=NAMESPACE)
    assert ray.get(agent.program.remote("fake", dep.name, BITSTREAM), timeout=60)["ok"]
    assert store.query(lambda s: s.get(Deployable, dep.id).bitstream_id) == BITSTREAM
    pid = ray.get(agent.status.remote())["pid"]
    ray.kill(agent, no_restart=False)
    wait_for(lambda: (lambda st: st["pid"] != pid and st["reports_sent"] >= 1)(ray.get(agent.status.remote())),
             timeout=60, what="the restarted agent's first report")
    assert store.query(lambda s: s.get(Deployable, dep.id).bitstream_id) == BITSTREAM

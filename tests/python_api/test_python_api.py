"""The Python API on a 4-host Ray cluster with fake devices: listing, batch programming of 200
simulated FPGAs with injected failures, refusal of bound devices, Ctrl-C, a host leaving mid-batch,
and standalone claims (racing, recorded in Placement, released on exit and when the job ends)."""

import io
import json
import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import ray
from factories import add_profile
from runtime_helpers import (
    assert_handles_consistent,
    fresh_store,
    kill_runtime,
    make_compute_nodes,
    start_runtime,
    wait_for,
)
from sqlmodel import select

from rayborg.actors.placement_client import PlacementClient
from rayborg.actors.runtime_config import RuntimeConfig
from rayborg.python_api.progress import ProgressBar
from rayborg.store.tables import Deployable

pytestmark = [pytest.mark.xdist_group("ray"), pytest.mark.slow]
HOSTS = ("host-a", "host-b", "host-c", "host-d")
FAILING = {"host-b_fake_fpga_7", "host-c_fake_fpga_13", "host-d_fake_fpga_42"}
BITSTREAM = "6b1f5f7e-1111-4c1e-9d7c-0a1b2c3d4e5f"
NOT_A_BITSTREAM = "c1c2c3c4-0000-4000-8000-000000000000"  # in Glance, not tagged FPGA


@pytest.fixture(scope="module")
def runtime(ray_cluster, placement_server, glance, tmp_path_factory):
    import rayborg

    cluster = ray_cluster["cluster"]
    node_d = cluster.add_node(
        num_cpus=0,
        labels={"rayborg-host": "host-d"},
        include_dashboard=False,
        object_store_memory=80 * 1024**2,
    )
    cluster.wait_for_nodes()
    store = fresh_store(tmp_path_factory.mktemp("api"))
    make_compute_nodes(placement_server.url, HOSTS)
    seed = random.randrange(1, 3000)
    overrides = {
        h: {
            "fake_devices": "fpga:50" + (",gpu:3" if h == "host-c" else ""),
            "driver_options": {
                "fake": {"seed": seed + 11 * i, "program_seconds": 0.1, "fail_program": sorted(FAILING)}
            },
        }
        for i, h in enumerate(HOSTS)
    }
    # host-c looks its bitstreams up in Glance (the fake driver itself takes any id)
    glance.add(BITSTREAM)
    glance.add(NOT_A_BITSTREAM, tags=())
    overrides["host-c"]["driver_options"]["bitstreams"] = {"glance_url": glance.url}
    # host-a's programming waits while this file exists (only while a test holds a batch mid-way)
    hold = tmp_path_factory.mktemp("hold") / "program-hold"
    overrides["host-a"]["driver_options"]["fake"]["program_hold"] = str(hold)
    config = RuntimeConfig(
        database_url=store.url,
        placement_url=placement_server.url,
        report_interval=30,
        retry_interval=0.2,
        host_overrides=overrides,
    )
    start_runtime(config)
    wait_for(
        lambda: store.query(lambda s: len(list(s.exec(select(Deployable))))) == 203,
        timeout=60,
        what="203 deployables",
    )
    add_profile(store, "one-gpu", [{"resources:PGPU": "1", "trait:CUSTOM_FAKE_GPU": "required"}])
    add_profile(store, "one-fpga", [{"resources:FPGA": "1"}])
    rb = rayborg.connect(cluster.address, database_url=store.url)  # no `rayborg serve` here: name both
    yield {
        "rb": rb,
        "store": store,
        "placement": PlacementClient(placement_server.url),
        "cluster": cluster,
        "node_d": node_d,
        "address": cluster.address,
        "glance": glance,
        "hold": hold,
    }
    kill_runtime()
    if node_d in cluster.worker_nodes:
        cluster.remove_node(node_d)
    store.dispose()


def _gpu_rps_in_placement(rt) -> bool:
    gpus = [d["rp_uuid"] for d in rt["rb"].devices(resource_class="PGPU")]
    return (
        len(gpus) == 3
        and all(rt["placement"].get_provider(rp) for rp in gpus)
        and not rt["store"].query(
            lambda s: list(s.exec(select(Deployable).where(Deployable.placement_dirty == True)))  # noqa: E712
        )
    )


def test_listing_hosts_and_devices_with_filters(runtime):
    rb = runtime["rb"]
    assert len(rb.devices()) == 203
    assert len(rb.devices(family="FPGA")) == 200
    assert len(rb.devices(host="host-c")) == 53
    gpus = rb.devices(resource_class="PGPU", trait="CUSTOM_FAKE_GPU", state="free")
    assert {d["host"] for d in gpus} == {"host-c"} and len(gpus) == 3
    assert rb.devices(trait="CUSTOM_NO_SUCH_TRAIT") == []
    hosts = {h["hostname"]: h for h in rb.hosts()}
    assert set(HOSTS) <= set(hosts)
    assert hosts["host-a"]["devices"] == 50 and hosts["host-a"]["in_cluster"]
    assert hosts["host-b"]["agent"]["name"] == "rayborg:host:host-b"
    assert ray.get(rb.host("host-b").status.remote())["hostname"] == "host-b"
    with pytest.raises(rayborg_error()):
        rb.host("host-z")


def rayborg_error():
    import rayborg

    return rayborg.RayborgError


def test_batch_program_200_fpgas_with_failures(runtime, caplog):
    rb = runtime["rb"]
    caplog.set_level(logging.DEBUG, logger="rayborg.program")
    results = rb.program(
        BITSTREAM, {"family": "FPGA"}, parallelism_per_host=4, parallelism=16, progress=False
    )
    assert len(results) == 200 and not results.interrupted
    assert len({r.deployable for r in results}) == 200
    failed = {r.deployable: r.error for r in results.failed}
    assert set(failed) == FAILING
    assert all("simulated programming failure" in e for e in failed.values())
    assert all(r.duration >= 0.1 for r in results.ok)
    # ideal: 200 devices / 16 at a time x 0.1 s = 1.3 s; the sweep after each programming costs more
    assert results.wall_seconds < 60
    for host in HOSTS:
        assert ray.get(rb.host(host).status.remote())["programming"] == []
    # one structured log line per device, naming its host, deployable and device
    lines = {r.deployable: r for r in caplog.records if r.name == "rayborg.program"}
    assert set(lines) == {r.deployable for r in results}
    devices = {d["deployable"]: d for d in rb.devices(family="FPGA")}
    for name in FAILING:
        rec = lines[name]
        assert rec.levelno == logging.WARNING and "simulated programming failure" in rec.getMessage()
        assert (rec.host, rec.device) == (devices[name]["host"], devices[name]["device_uuid"])
    assert {lines[r.deployable].levelno for r in results.ok} == {logging.DEBUG}
    wait_for(
        lambda: sum(d["bitstream_id"] == BITSTREAM for d in rb.devices(family="FPGA")) == 197,
        timeout=30,
        what="bitstreams in the store",
    )


def test_bad_input_gives_clear_results(runtime):
    rb = runtime["rb"]
    with pytest.raises(rayborg_error(), match="matched no deployables"):
        rb.program(BITSTREAM, "host=host-z")
    with pytest.raises(rayborg_error(), match="unknown selector key"):
        rb.program(BITSTREAM, "colour=blue")
    with pytest.raises(rayborg_error(), match="admin"):
        rb.program(BITSTREAM, "host=host-a", force=True)
    # a GPU cannot be programmed: a failed result with the driver's reason, not an exception
    results = rb.program(BITSTREAM, {"family": "GPU"}, progress=False)
    assert len(results) == 3 and all(
        r.status == "failed" and "cannot be programmed" in r.error for r in results
    )


def test_bound_devices_are_refused_unless_forced_by_an_admin(runtime):
    import rayborg

    rb = runtime["rb"]
    with rb.claim("one-fpga", host="host-a") as claim:
        mine = claim.devices[0]["deployable"]
        few = [mine, "host-a_fake_fpga_1" if mine != "host-a_fake_fpga_1" else "host-a_fake_fpga_2"]
        results = {r.deployable: r for r in rb.program(BITSTREAM, few, progress=False)}
        assert results[mine].status == "refused" and claim.consumer in results[mine].error
        assert results[few[1]].ok
        assert [r.status for r in claim.program(BITSTREAM, progress=False)] == ["ok"]  # the owner may
        admin = rayborg.Rayborg(admin=True)
        assert [r.status for r in admin.program(BITSTREAM, [mine], force=True, progress=False)] == ["ok"]
    assert rb.devices(host="host-a", state="bound") == []


def test_ctrl_c_cancels_pending_and_leaves_nothing_programming(runtime):
    rb = runtime["rb"]
    it = rb.program_iter(BITSTREAM, "host=host-a|host-b", parallelism_per_host=2, parallelism=4)
    first = [next(it) for _ in range(3)]
    rest = [it.throw(KeyboardInterrupt)]
    with pytest.raises(KeyboardInterrupt):
        for result in it:
            rest.append(result)
    results = first + rest
    assert len(results) == 100
    assert len({r.deployable for r in results}) == 100
    cancelled = [r for r in results if r.status == "cancelled"]
    assert 80 <= len(cancelled) <= 97, len(cancelled)
    assert all("Ctrl-C" in r.error for r in cancelled)
    for host in ("host-a", "host-b"):
        assert ray.get(rb.host(host).status.remote())["programming"] == []
    # the same through program(): interrupted results instead of an exception
    results = rb.program(BITSTREAM, ["host-a_fake_fpga_3"], progress=False)
    assert [r.status for r in results] == ["ok"] and not results.interrupted


def test_standalone_claims_race_and_respect_placement(runtime, caplog):
    caplog.set_level(logging.INFO, logger="rayborg.claims")
    rb, placement = runtime["rb"], runtime["placement"]
    wait_for(lambda: _gpu_rps_in_placement(runtime), timeout=60, what="GPU RPs in Placement")
    gpus = sorted(d["rp_uuid"] for d in rb.devices(resource_class="PGPU"))
    # "Nova" holds one GPU in Placement only: rayborg must not hand it out.
    nova_consumer = "11111111-2222-4333-8444-555555555555"
    resp = placement._request(
        "PUT",
        f"/allocations/{nova_consumer}",
        {
            "allocations": {gpus[0]: {"resources": {"PGPU": 1}}},
            "consumer_generation": None,
            "project_id": "p",
            "user_id": "u",
            "consumer_type": "INSTANCE",
        },
    )
    assert resp.status_code == 204, resp.text
    claims, errors = [], []

    def grab():
        while True:
            try:
                claims.append(rb.claim("one-gpu"))
            except rayborg_error() as exc:
                errors.append(str(exc))
                return

    threads = [threading.Thread(target=grab) for _ in range(2)]
    [t.start() for t in threads]
    [t.join(60) for t in threads]
    assert len(claims) == 2, (claims, errors)
    assert all("no free PGPU" in e for e in errors), errors
    rps = [c.devices[0]["rp_uuid"] for c in claims]
    assert sorted(rps) == gpus[1:]  # never the same device, never Nova's
    for c in claims:
        body = placement._request("GET", f"/allocations/{c.consumer}").json()
        assert body["allocations"] == {
            c.devices[0]["rp_uuid"]: {
                "generation": body["allocations"][c.devices[0]["rp_uuid"]]["generation"],
                "resources": {"PGPU": 1},
            }
        }
        assert body["consumer_type"] == "RAYBORG"
    assert_handles_consistent(runtime["store"])
    logged = {(r.instance, r.arq, r.host, r.deployable) for r in caplog.records if r.name == "rayborg.claims"}
    assert logged == {(c.consumer, c.arqs[0], c.devices[0]["host"], c.devices[0]["deployable"]) for c in claims}
    claims[0].release()
    claims[0].release()  # idempotent
    released = [(r.instance, r.arq) for r in caplog.records if r.getMessage() == "released"]
    assert released == [(claims[0].consumer, claims[0].arqs[0])]
    assert placement._request("GET", f"/allocations/{claims[0].consumer}").json()["allocations"] == {}
    assert len(rb.devices(resource_class="PGPU", state="free")) == 2
    with rb.claim("one-gpu") as again:
        assert again.devices[0]["rp_uuid"] == rps[0]
    claims[1].release()
    placement._request("DELETE", f"/allocations/{nova_consumer}")
    assert rb.claims() == {}


def test_claims_are_bounded_like_a_post_of_the_profile(runtime):
    """Settings' max_group_amount / max_profile_amount hold for claims too (defaults 64 / 128): a
    profile stored before the limits, or a count that takes a claim past them, creates nothing."""
    from rayborg.store.tables import ExtARQ

    rb, store = runtime["rb"], runtime["store"]
    add_profile(store, "huge-gpu", [{"resources:PGPU": "200000"}])
    arqs_before = store.query(lambda s: len(list(s.exec(select(ExtARQ)))))
    with pytest.raises(rayborg_error(), match=r"group 0: resources:PGPU amount '200000' must be .* from 1 to 64"):
        rb.claim("huge-gpu")
    with pytest.raises(rayborg_error(), match=r"129 x profile 'one-gpu' is 129 accelerators, more than the 128"):
        rb.claim("one-gpu", count=129)
    assert store.query(lambda s: len(list(s.exec(select(ExtARQ))))) == arqs_before
    assert rb.claims() == {}


def test_claims_of_an_ended_job_are_released(runtime):
    rb = runtime["rb"]
    script = textwrap.dedent("""
        import sys, rayborg
        c = rayborg.connect(sys.argv[1], database_url=sys.argv[2]).claim("one-gpu", count=2)
        print(c.consumer, flush=True)
    """)
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    out = subprocess.run(
        [sys.executable, "-c", script, runtime["address"], runtime["store"].url],
        capture_output=True,
        text=True,
        env=env,
        timeout=90,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    consumer = out.stdout.strip().splitlines()[-1]
    wait_for(lambda: consumer not in rb.claims(), timeout=30, what="the ended job's claim to go")
    assert len(rb.devices(resource_class="PGPU", state="free")) == 3
    assert runtime["placement"]._request("GET", f"/allocations/{consumer}").json()["allocations"] == {}


def few(host: str, n: int) -> list[str]:
    return [f"{host}_fake_fpga_{i}" for i in range(20, 20 + n)]


def test_parallelism_caps_per_host_and_overall(runtime):
    """What the agents report as being programmed, sampled through the batch, never exceeds
    parallelism_per_host on a host nor parallelism in all."""
    rb = runtime["rb"]
    hosts = ("host-a", "host-b", "host-c")
    agents = {h: rb.host(h) for h in hosts}
    peaks = {"total": 0, **{h: 0 for h in hosts}}
    done = threading.Event()

    def sample():
        while not done.is_set():
            now = dict(zip(hosts, ray.get([agents[h].status.remote() for h in hosts])))
            for h in hosts:
                peaks[h] = max(peaks[h], len(now[h]["programming"]))
            peaks["total"] = max(peaks["total"], sum(len(st["programming"]) for st in now.values()))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        names = [n for h in hosts for n in few(h, 12)]
        results = rb.program(BITSTREAM, names, parallelism_per_host=3, parallelism=5, progress=False)
    finally:
        done.set()
        sampler.join(30)
    assert sorted(r.deployable for r in results) == sorted(names) and all(r.ok for r in results)
    assert all(peaks[h] <= 3 for h in hosts), peaks
    assert 2 <= peaks["total"] <= 5, peaks  # at least 2: the sampler did see calls overlap


def test_progress_bar_reaches_the_total(runtime):
    from rich.console import Console

    out = io.StringIO()
    names = few("host-a", 5)
    results = runtime["rb"].program(BITSTREAM, names, progress=Console(file=out, width=100))
    assert len(results) == 5
    text = out.getvalue()
    assert "programming" in text and "5/5" in text and "0 failed" in text


def test_unknown_bitstream_is_checked_once_before_the_batch(runtime):
    rb, glance = runtime["rb"], runtime["glance"]
    names = few("host-b", 2) + few("host-c", 4)
    before = len(glance.asked)
    results = {r.deployable: r for r in rb.program("no-such-image", names, progress=False)}
    assert glance.asked[before:] == ["no-such-image"]  # once, not per device
    assert set(results) == set(names)
    for name in few("host-c", 4):  # host-c's source says no: nothing was tried there
        r = results[name]
        assert (r.status, r.error, r.duration) == (
            "failed", "bitstream image no-such-image does not exist in Glance", 0.0)
    assert all(results[n].ok for n in few("host-b", 2))  # host-b has no bitstream source to ask
    bad = rb.program(NOT_A_BITSTREAM, few("host-c", 2), progress=False)
    assert [r.error for r in bad] == [f"image {NOT_A_BITSTREAM} is not tagged FPGA"] * 2


def test_ctrl_c_inside_program_leaves_every_device_a_result(runtime, monkeypatch):
    """The KeyboardInterrupt lands in program()'s own frame (the progress bar), not in the batch."""
    from rich.console import Console

    rb = runtime["rb"]
    advance = ProgressBar.advance
    calls = []

    def advance_then_ctrl_c(self, result):
        advance(self, result)
        calls.append(result)
        if len(calls) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(ProgressBar, "advance", advance_then_ctrl_c)
    results = rb.program(BITSTREAM, "host=host-a|host-b", parallelism_per_host=2, parallelism=4,
                         progress=Console(file=io.StringIO()))
    assert results.interrupted
    assert len(results) == 100 and len({r.deployable for r in results}) == 100
    cancelled = [r for r in results if r.status == "cancelled"]
    assert 80 <= len(cancelled) <= 97 and all("Ctrl-C" in r.error for r in cancelled)
    assert len(calls) == 100  # the bar saw every result too
    for host in ("host-a", "host-b"):
        assert ray.get(rb.host(host).status.remote())["programming"] == []


def test_sigint_to_rayborg_program_exits_130(runtime, tmp_path):
    """SIGINT lands while the batch's first device is being programmed (held there by the fake
    driver's program_hold until the signal has been handled): the queued 49 are cancelled, the
    running one finishes, every device has a result, the command exits 130."""
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    hold, errors = runtime["hold"], tmp_path / "stderr"
    hold.touch()
    with open(errors, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rayborg", "--debug", "--log-format", "json", "program", "--json",
             "--address", runtime["address"], "--database-url", runtime["store"].url,
             "--bitstream", BITSTREAM, "--where", "host=host-a", "--parallelism-per-host", "1"],
            stdout=subprocess.PIPE, stderr=stderr, text=True, env=env,
        )
    try:
        agent = runtime["rb"].host("host-a")
        wait_for(lambda: ray.get(agent.status.remote())["programming"] or proc.poll() is not None,
                 timeout=90, what="host-a programming a device")
        proc.send_signal(signal.SIGINT)
        wait_for(lambda: "before programming started" in errors.read_text() or proc.poll() is not None,
                 timeout=60, what="the queued devices cancelled")
    finally:
        hold.unlink(missing_ok=True)  # the running device finishes
        try:
            out, _ = proc.communicate(timeout=60)
        finally:
            proc.kill()
    err = errors.read_text()
    assert proc.returncode == 130, err[-2000:]
    assert json.loads(err.splitlines()[-1])["message"] == "rayborg program: interrupted"
    body = json.loads(out)
    assert body["interrupted"] and sorted(r["deployable"] for r in body["results"]) == sorted(
        f"host-a_fake_fpga_{i}" for i in range(50)
    )
    assert body["counts"] == {"ok": 1, "cancelled": 49}, body["counts"]
    assert ray.get(runtime["rb"].host("host-a").status.remote())["programming"] == []


@ray.remote(num_cpus=0)
class BrokenBinder:
    def release(self, consumer):
        from rayborg.actors.placement_client import PlacementUnavailable

        raise PlacementUnavailable("connection refused")

    def slow(self):
        time.sleep(30)

    def arqs(self, state=None, host=None):  # called only once this actor is dead
        return []


def test_ray_failures_become_rayborg_errors(runtime):
    import rayborg

    rb = rayborg.Rayborg()
    broken = BrokenBinder.remote()
    rb._binders._handles = {i: broken for i in range(rb.config["binder_count"])}  # a claim's release goes to its owner
    with pytest.raises(rayborg.RayborgError, match="release: Placement is unavailable, try again"):
        rb.release("11111111-c1a1-4111-8111-111111111111")
    with pytest.raises(rayborg.RayborgError, match="did not answer within 0.5s"):
        rb._call("slow", timeout=0.5)
    ray.kill(broken)
    with pytest.raises(rayborg.RayborgError, match="binder 0 is unavailable .*try again"):
        rb.arqs()
    assert rb.arqs() == runtime["rb"].arqs()  # the real binder is looked up again


def test_a_host_that_leaves_mid_batch(runtime):
    rb = runtime["rb"]
    it = rb.program_iter(BITSTREAM, "host=host-d", parallelism_per_host=1, timeout=60)
    results = [next(it)]
    runtime["cluster"].remove_node(runtime["node_d"])
    results += list(it)
    assert len(results) == 50
    lost = [r for r in results if not r.ok and "left the cluster" in (r.error or "")]
    assert len(lost) >= 40, [r.error for r in results][:5]

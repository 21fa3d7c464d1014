"""The Python API on a 4-host Ray cluster with fake devices: listing, batch programming of 200
simulated FPGAs with injected failures, refusal of bound devices, Ctrl-C, a host leaving mid-batch,
and standalone claims (racing, recorded in Placement, released on exit and when the job ends)."""

import os
import random
import subprocess
import sys
import textwrap
import threading

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
from rayborg.store.tables import Deployable

pytestmark = [pytest.mark.xdist_group("ray"), pytest.mark.slow]
HOSTS = ("host-a", "host-b", "host-c", "host-d")
FAILING = {"host-b_fake_fpga_7", "host-c_fake_fpga_13", "host-d_fake_fpga_42"}
BITSTREAM = "6b1f5f7e-1111-4c1e-9d7c-0a1b2c3d4e5f"


@pytest.fixture(scope="module")
def runtime(ray_cluster, placement_server, tmp_path_factory):
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
    rb = rayborg.connect()
    yield {
        "rb": rb,
        "store": store,
        "placement": PlacementClient(placement_server.url),
        "cluster": cluster,
        "node_d": node_d,
        "address": cluster.address,
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


def test_batch_program_200_fpgas_with_failures(runtime):
    rb = runtime["rb"]
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


def test_standalone_claims_race_and_respect_placement(runtime):
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
    claims[0].release()
    claims[0].release()  # idempotent
    assert placement._request("GET", f"/allocations/{claims[0].consumer}").json()["allocations"] == {}
    assert len(rb.devices(resource_class="PGPU", state="free")) == 2
    with rb.claim("one-gpu") as again:
        assert again.devices[0]["rp_uuid"] == rps[0]
    claims[1].release()
    placement._request("DELETE", f"/allocations/{nova_consumer}")
    assert rb.claims() == {}


def test_claims_of_an_ended_job_are_released(runtime):
    rb = runtime["rb"]
    script = textwrap.dedent("""
        import sys, rayborg
        c = rayborg.connect(sys.argv[1]).claim("one-gpu", count=2)
        print(c.consumer, flush=True)
    """)
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    out = subprocess.run(
        [sys.executable, "-c", script, runtime["address"]],
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


def test_a_host_that_leaves_mid_batch(runtime):
    rb = runtime["rb"]
    it = rb.program_iter(BITSTREAM, "host=host-d", parallelism_per_host=1, timeout=60)
    results = [next(it)]
    runtime["cluster"].remove_node(runtime["node_d"])
    results += list(it)
    assert len(results) == 50
    lost = [r for r in results if not r.ok and "left the cluster" in (r.error or "")]
    assert len(lost) >= 40, [r.error for r in results][:5]

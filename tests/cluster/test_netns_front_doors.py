"""Front doors on two hosts of one cluster (issue 19 item 2), with hosts in network namespaces of their
own (tests/cluster/netns.py) and a PostgreSQL both reach on the test bridge.

The head runs ray_cluster.yaml's `rayborg serve` (it takes the database's lease, starts the singleton
actors and supervises); rb-host1 runs the same line with `--join` (no lease, no supervisor: the
head's actors). Shown: both serve the same reads, a bind made through either ends Bound and is seen
through the other; the head's serve killed -9 (its raylet, and so the detached actors, live on) ->
rb-host1 goes on serving reads, takes the lease within TAKEOVER_S and a new bind through it ends
Bound; the head's serve started again with `--join` serves beside it. `-s` prints the times."""

from __future__ import annotations

import os
import shutil
import signal
import time
import uuid

import pytest
import requests
from sqlalchemy.engine import make_url

import netns
from waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.xdist_group("netns"), pytest.mark.timeout(600)]

HEAD, HOST1 = "rb-head", "rb-host1"
TREES = {HEAD: "intel_fpga", HOST1: "intel_fpga"}  # two FPGA cards (and a NIC) on each host
# The joined front door looks at the lease every WATCH_SECONDS (2 s); a holder killed on the same
# kernel is seen dead at once (its pid is gone), so the lease changes hands within a few seconds
# (from another machine it is LEASE_SECONDS after the last heartbeat). Room for a busy 2-core machine.
TAKEOVER_S = 20.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = netns.unavailable()
    if reason:
        pytest.skip(f"hosts in network namespaces: {reason}")
    from pgserver import PostgresServer

    from rayborg.drivers.sysfs_tree import fixture_tree
    from rayborg.store.engine import Store

    work = tmp_path_factory.mktemp("netns-doors")
    trees = {host: fixture_tree(family, work / "trees" / host) for host, family in TREES.items()}
    c = netns.NetnsCluster(work, trees, {"auth_strategy": "noauth", "sysfs_root": str(work / "sys"),
                                         "report_interval": 5.0})
    pg = None
    try:
        c.create()
        pg = PostgresServer(also_on=c.bridge_ip, network=str(c.net)).start()
        local_url = pg.create_database()
        c.write_config(database_url=pg.url(make_url(local_url).database, host=c.bridge_ip))
        c.timings = {f"start {name}": c.start_host(name) for name in TREES}
        c.timings["start serve (head)"] = c.start_serve()
        c.store = Store(local_url)
        c.doors = {HEAD: c.serve_url, HOST1: f"http://{c.hosts[HOST1].ip}:{netns.SERVE_PORT}"}
        c.timings["start serve --join (rb-host1)"] = start_joined(c, HOST1)
        yield c
        c.store.dispose()
    finally:
        try:
            c.close()
        finally:
            if pg is not None:
                pg.stop()
        print(f"\nfront doors timings: {getattr(c, 'timings', {})}")


def start_joined(c, name: str) -> float:
    """The YAML's serve line with `--join`, on host `name` (the daemon's config file shipped there too)."""
    started = time.monotonic()
    home = c.hosts[name].home
    conf = home / ".config" / "rayborg" / "rayborg.toml"
    if name != c.head.name:
        conf.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(c.head.home / ".config" / "rayborg" / "rayborg.toml", conf)
    (home / "rayborg-serve.log").unlink(missing_ok=True)
    c.run(name, c.serve_line().replace(" serve ", " serve --join ", 1), timeout=30)
    wait_for(lambda: answers(c.doors[name]), 120, what=f"rayborg serve --join on {name}",
             detail=lambda: serve_log(c, name)[-3000:])
    return time.monotonic() - started


def serve_log(c, name: str) -> str:
    path = c.hosts[name].home / "rayborg-serve.log"
    return path.read_text(errors="replace") if path.is_file() else ""


def answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/v2", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def api(c, door: str, method: str, path: str, **kw) -> requests.Response:
    return requests.request(method, c.doors[door] + path, timeout=30, **kw)


def deployable_names(c, door: str) -> list[str]:
    resp = api(c, door, "GET", "/v2/deployables")
    assert resp.status_code == 200, resp.text
    return sorted(d["name"] for d in resp.json()["deployables"])


def arq(c, door: str, uuid_: str) -> dict:
    resp = api(c, door, "GET", f"/v2/accelerator_requests/{uuid_}")
    assert resp.status_code == 200, resp.text
    return resp.json()


def bind_through(c, door: str, hostname: str) -> tuple[str, float]:
    """Create an ARQ and bind it standalone on `hostname`, both through `door`: the ARQ once Bound,
    and the seconds from the PATCH to Bound."""
    resp = api(c, door, "POST", "/v2/accelerator_requests", json={"device_profile_name": "doors-fpga"})
    assert resp.status_code == 201, resp.text
    uuid_ = resp.json()["arqs"][0]["uuid"]
    ops = [{"op": "add", "path": "/instance_uuid", "value": str(uuid.uuid4())},
           {"op": "add", "path": "/hostname", "value": hostname}]
    patched = time.monotonic()
    resp = api(c, door, "PATCH", "/v2/accelerator_requests", json={uuid_: ops})
    assert resp.status_code == 202, resp.text
    body = wait_for(lambda: (b := arq(c, door, uuid_))["state"] in ("Bound", "BindFailed") and b, 60,
                    what=f"ARQ {uuid_} bound through {door}", detail=lambda: serve_log(c, door)[-3000:])
    assert body["state"] == "Bound" and body["hostname"] == hostname, body
    return uuid_, time.monotonic() - patched


def holder(c):
    from rayborg.store import daemon_lease

    return daemon_lease.current(c.store)


def test_two_front_doors_serve_alike_and_the_joined_one_takes_over(cluster):
    c = cluster
    expected = sorted(f"{h}_0000_{bus}_00_0" for h in TREES for bus in ("5e", "be"))
    wait_for(lambda: set(expected) <= set(deployable_names(c, HEAD)), 90, what="both hosts' FPGAs reported",
             detail=lambda: f"{deployable_names(c, HEAD)}\n{c.serve_log()[-3000:]}")
    # The head's serve holds the lease; the joined one does not (it uses the head's actors).
    lease = holder(c)
    assert (lease.hostname, lease.pid) == (HEAD, c.serve_pids()[0]), lease
    assert lease.ray_address == c.head_address
    # Reads: the same answers through either front door.
    assert deployable_names(c, HOST1) == deployable_names(c, HEAD)
    resp = api(c, HEAD, "POST", "/v2/device_profiles", json=[{"name": "doors-fpga", "groups": [{"resources:FPGA": "1"}]}])
    assert resp.status_code == 201, resp.text
    assert [p["name"] for p in api(c, HOST1, "GET", "/v2/device_profiles").json()["device_profiles"]] == ["doors-fpga"]
    # Binds through either front door, each seen Bound through the other.
    through_head, c.timings["bind through the head"] = bind_through(c, HEAD, HOST1)
    through_joined, c.timings["bind through rb-host1 (joined)"] = bind_through(c, HOST1, HEAD)
    for door, other in ((HEAD, through_joined), (HOST1, through_head)):
        assert arq(c, door, other)["state"] == "Bound"
    assert holder(c).hostname == HEAD  # the joined front door took nothing over while the head lives

    # The head's serve killed -9: its raylet and the detached actors live on; rb-host1 goes on.
    (pid,) = c.serve_pids()
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    assert arq(c, HOST1, through_head)["state"] == "Bound"  # reads never stopped
    assert set(expected) <= set(deployable_names(c, HOST1))
    taken = wait_for(lambda: (h := holder(c)) is not None and h.hostname == HOST1 and h, TAKEOVER_S,
                     what="rb-host1's front door to take the lease", detail=lambda: serve_log(c, HOST1)[-3000:])
    c.timings["serve killed -> lease taken"] = took = time.monotonic() - killed
    assert taken.ray_address == c.head_address and taken.api_port == netns.SERVE_PORT
    wait_for(lambda: "supervising the actors" in serve_log(c, HOST1), 60, what="rb-host1 to supervise",
             detail=lambda: serve_log(c, HOST1)[-3000:])
    c.timings["serve killed -> supervising"] = time.monotonic() - killed
    after, c.timings["bind through rb-host1 after the takeover"] = bind_through(c, HOST1, HEAD)
    c.timings["serve killed -> a new bind Bound"] = bound = time.monotonic() - killed
    print(f"\nhead's serve killed -> lease taken by rb-host1 in {took:.1f} s, a new bind through it Bound "
          f"{bound:.1f} s after the kill")

    # The head's front door back, now joined beside the new holder: both serve again.
    c.timings["restart the head's serve with --join"] = start_joined(c, HEAD)
    assert holder(c).hostname == HOST1
    assert arq(c, HEAD, after)["state"] == "Bound"
    again, _ = bind_through(c, HEAD, HOST1)
    assert arq(c, HOST1, again)["state"] == "Bound"

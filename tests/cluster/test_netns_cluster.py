"""A rayborg cluster of hosts with their own addresses (tests/cluster/netns.py): a Ray head and two
worker hosts, each in its own network namespace with its own IP, hostname and sysfs tree, started
with ray_cluster.yaml's start commands (token auth on), `rayborg serve` on the head as the YAML runs
it, against a real Placement on the bridge. One cluster serves the whole module; the tests run in
order (a host lost and back, the daemon restarted) and each leaves the cluster whole again."""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "actors"))  # runtime_helpers

import netns  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("netns"), pytest.mark.timeout(600)]

HEAD, HOST1, HOST2 = "rb-head", "rb-host1", "rb-host2"
TREES = {HEAD: "intel_qat", HOST1: "nvidia_vgpu", HOST2: "intel_fpga"}
REPORT_INTERVAL = 5.0
# Device keys (driver:address) each fixture tree gives its host.
HOST2_KEYS = ["intel_fpga:0000:5e:00.0", "intel_fpga:0000:be:00.0", "intel_x710:0000:3b:00.0"]  # + a NIC
VGPU_KEYS = ["nvidia_vgpu:0000:86:00.0", "nvidia_vgpu:0000:af:00.0"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = netns.unavailable()
    if reason:
        pytest.skip(f"hosts in network namespaces: {reason}")
    from runtime_helpers import make_compute_nodes
    from service_starters import Placement, ServiceUnavailable

    from rayborg.drivers.testing import fixture_tree

    work = tmp_path_factory.mktemp("netns")
    trees = {host: fixture_tree(family, work / "trees" / host) for host, family in TREES.items()}
    config = {"database_url": f"sqlite:///{work / 'rayborg.db'}", "auth_strategy": "noauth",
              "sysfs_root": str(work / "sys"), "report_interval": REPORT_INTERVAL}
    c = netns.NetnsCluster(work, trees, config)
    placement = None
    try:
        c.create()
        try:  # on the bridge: the root namespace's loopback is not reachable from the hosts
            placement = Placement(host=c.bridge_ip).start()
        except ServiceUnavailable as exc:
            pytest.skip(f"no real Placement: {exc}")
        c.write_config(placement_url=placement.url)
        make_compute_nodes(placement.url, TREES)
        c.timings = {f"start {name}": c.start_host(name) for name in TREES}
        c.timings["start serve"] = c.start_serve()
        c.trees, c.placement, c.store = trees, placement, _store(config["database_url"])
        yield c
        c.store.dispose()
    finally:
        try:
            c.close()
        finally:
            if placement is not None:
                placement.stop()
        print(f"\nnetns cluster timings: {getattr(c, 'timings', {})}")


def _store(url):
    from rayborg.store.engine import Store

    return Store(url)


# -- what the test looks at: the REST API, the store file, Placement ---------------------------------
def api(c, method, path, **kw):
    resp = requests.request(method, c.serve_url + path, timeout=30, **kw)
    return resp


def devices_by_host(c) -> dict[str, list[str]]:
    from sqlmodel import select

    from rayborg.store.tables import Device

    rows = c.store.query(lambda s: [(d.hostname, d.std_board_info_key) for d in s.exec(select(Device))])
    found: dict[str, list[str]] = {}
    for host, key in rows:
        found.setdefault(host, []).append(key)
    return {h: sorted(keys) for h, keys in found.items()}


def host_states(c) -> dict[str, str]:
    from sqlmodel import select

    from rayborg.store.tables import Host

    return c.store.query(lambda s: {h.hostname: h.state for h in s.exec(select(Host))})


def deployables(c, host: str) -> list[dict]:
    resp = api(c, "GET", "/v2/deployables")
    assert resp.status_code == 200, resp.text
    return sorted((d for d in resp.json()["deployables"] if d["name"].startswith(f"{host}_")),
                  key=lambda d: d["name"])


def wait_for(predicate, timeout: float, what: str, interval: float = 0.25, detail=None):
    return netns._wait(predicate, timeout, what, interval=interval, detail=detail)


def wait_placement_agrees(c, timeout: float = 60) -> None:
    from runtime_helpers import wait_store_matches_placement

    from rayborg.actors.placement_client import PlacementClient

    wait_store_matches_placement(c.store, PlacementClient(c.placement.url), timeout=timeout)


def wait_all_reported(c, timeout: float = 90) -> None:
    wait_for(lambda: set(devices_by_host(c)) == set(TREES) and set(host_states(c).values()) == {"up"},
             timeout, "every host's devices in the store, every host up",
             detail=lambda: f"devices {devices_by_host(c)}, hosts {host_states(c)}\n{c.serve_log()[-3000:]}")


def ensure_profile(c, name: str, group: dict[str, str]) -> None:
    resp = api(c, "POST", "/v2/device_profiles", json=[{"name": name, "groups": [group]}])
    assert resp.status_code in (201, 409), resp.text


def create_arq(c, profile: str) -> str:
    resp = api(c, "POST", "/v2/accelerator_requests", json={"device_profile_name": profile})
    assert resp.status_code == 201, resp.text
    return resp.json()["arqs"][0]["uuid"]


def bind(c, arq: str, hostname: str | None, device_rp_uuid: str | None = None) -> requests.Response:
    ops = [{"op": "add", "path": "/instance_uuid", "value": str(uuid.uuid4())}]
    if hostname:
        ops.append({"op": "add", "path": "/hostname", "value": hostname})
    if device_rp_uuid:
        ops.append({"op": "add", "path": "/device_rp_uuid", "value": device_rp_uuid})
    return api(c, "PATCH", "/v2/accelerator_requests", json={arq: ops})


def unbind(c, arq: str) -> None:
    ops = [{"op": "remove", "path": f"/{f}"} for f in ("hostname", "device_rp_uuid", "instance_uuid")]
    resp = api(c, "PATCH", "/v2/accelerator_requests", json={arq: ops})
    assert resp.status_code == 202, resp.text
    wait_for(lambda: arq_body(c, arq)["state"] == "Unbound", 60, f"ARQ {arq} unbound",
             detail=lambda: str(arq_body(c, arq)))


def arq_body(c, arq: str) -> dict:
    resp = api(c, "GET", f"/v2/accelerator_requests/{arq}")
    assert resp.status_code == 200, resp.text
    return resp.json()


def wait_resolved(c, arq: str, timeout: float = 60) -> dict:
    """The ARQ once its bind has finished (Bound or BindFailed)."""
    return wait_for(lambda: (b := arq_body(c, arq))["state"] in ("Bound", "BindFailed") and b, timeout,
                    f"ARQ {arq}'s bind to finish", detail=lambda: str(arq_body(c, arq)))


def mdevs(root: Path) -> list[str]:
    devices = root / "bus" / "mdev" / "devices"
    return sorted(p.name for p in devices.iterdir()) if devices.is_dir() else []


# -- (a) ---------------------------------------------------------------------------------------------
def test_each_host_has_its_own_address_and_its_devices_under_its_own_compute_node(cluster):
    c = cluster
    nodes = {n["Labels"].get("rayborg-host"): n for n in c.ray_nodes() if n["Alive"]}
    assert {h: (n["NodeManagerAddress"], n["NodeManagerHostname"]) for h, n in nodes.items()} == {
        name: (host.ip, name) for name, host in c.hosts.items()}
    wait_all_reported(c)
    by_host = devices_by_host(c)
    assert by_host[HOST1] == VGPU_KEYS and by_host[HOST2] == HOST2_KEYS
    assert by_host[HEAD] and all(k.startswith("intel_qat:") for k in by_host[HEAD])
    wait_placement_agrees(c)
    from rayborg.actors.placement_client import PlacementClient

    placement = PlacementClient(c.placement.url)
    for host in TREES:
        compute = placement.find_provider_by_name(host)
        deps = deployables(c, host)
        assert deps, host
        for dep in deps:
            assert placement.get_provider(dep["rp_uuid"])["parent_provider_uuid"] == compute, dep["name"]
    # Each HostAgent runs on its own host's node and reads its own tree at the common path.
    out = c.ray_script(
        "import json, ray\n"
        f"ray.init(address={c.head_address!r}, namespace='rayborg', log_to_driver=False, logging_level='ERROR')\n"
        f"names = {list(TREES)!r}\n"
        "st = {n: ray.get(ray.get_actor('rayborg:host:' + n).status.remote(), timeout=30) for n in names}\n"
        "print('STATUS', json.dumps({n: [s['node_id'], s['sysfs_root']] for n, s in st.items()}))\n")
    (line,) = [x for x in out.splitlines() if x.startswith("STATUS ")]
    import json

    status = json.loads(line[7:])
    assert {h: s[0] for h, s in status.items()} == {h: nodes[h]["NodeID"] for h in TREES}
    assert {s[1] for s in status.values()} == {str(c.sysfs)}


# -- (b) ---------------------------------------------------------------------------------------------
def test_a_bind_on_a_remote_host_reaches_that_hosts_agent(cluster):
    """A standalone vGPU bind for rb-host1 creates the mdev there: the create lands in rb-host1's
    own tree, which only rb-host1's mount namespace has at the sysfs path; the unbind removes it."""
    from rayborg.drivers.testing import FakeKernel

    c = cluster
    wait_all_reported(c)
    tree = c.trees[HOST1]
    kernel = FakeKernel(tree)
    before = mdevs(tree)
    ensure_profile(c, "netns-vgpu", {"resources:VGPU": "1"})
    arq = create_arq(c, "netns-vgpu")
    resp = bind(c, arq, HOST1)
    assert resp.status_code == 202, resp.text
    body = wait_resolved(c, arq)
    assert body["state"] == "Bound", body
    assert body["hostname"] == HOST1 and body["attach_handle_type"] == "MDEV"
    assert body["device_rp_uuid"] in {d["rp_uuid"] for d in deployables(c, HOST1)}
    assert kernel.settle() == [f"create {body['attach_handle_uuid']}"]
    assert mdevs(tree) == sorted(before + [body["attach_handle_uuid"]])
    unbind(c, arq)  # the mdev's removal follows the state change, from rb-host1's agent too
    removed: list[str] = []
    wait_for(lambda: removed.extend(kernel.settle()) or removed, 30, "the mdev's removal on rb-host1")
    assert removed == [f"remove {body['attach_handle_uuid']}"] and mdevs(tree) == before

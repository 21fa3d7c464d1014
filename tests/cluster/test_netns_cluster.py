"""A rayborg cluster of hosts with their own addresses (tests/cluster/netns.py): a Ray head and two
worker hosts, each in its own network namespace with its own IP, hostname and sysfs tree, started
with ray_cluster.yaml's start commands (token auth on), `rayborg serve` on the head as the YAML runs
it, against a real Placement on the bridge. One cluster serves the whole module; the tests run in
order (a host lost and back, the daemon restarted) and each leaves the cluster whole again.

Shown: (a) each host's devices under its own compute node, each HostAgent on its own node; (b) a bind
for a remote host reaches that host's agent (the mdev is created in that host's tree); (c) a worker's
raylet killed -> its host marked lost (devices kept) within LOST_AFTER_CRASH_S, nothing binds there;
(d) the host started again -> up, binds there again; (e) `rayborg serve` restarted -> the actors live
on, nothing lost, binds and unbinds continue; and a host cut off from the network -> lost within
LOST_AFTER_SILENCE_S. `-s` prints the measured times."""

from __future__ import annotations

import json
import re
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "actors"))  # runtime_helpers

import netns  # noqa: E402
import waiting  # noqa: E402

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

    from rayborg.drivers.sysfs_tree import fixture_tree

    work = tmp_path_factory.mktemp("netns")
    trees = {host: fixture_tree(family, work / "trees" / host) for host, family in TREES.items()}
    config = {"database_url": f"sqlite:///{work / 'rayborg.db'}", "auth_strategy": "noauth",
              "sysfs_root": str(work / "sys"), "report_interval": REPORT_INTERVAL,
              "driver_options": {"intel_fpga": {"tool": str(fake_fpgaconf(work, work / "sys"))},
                                 "bitstreams": {"dir": str(bitstream_dir(work))}}}
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


BITSTREAM = "5b3c8f0e-9a41-4c55-8e7e-2f6a1b0c9d11"
NEW_AFU = "f7df405cbd7acf7222f144b0b93acd18"


def fake_fpgaconf(work: Path, sysfs: Path) -> Path:
    """A stand-in for Intel's fpgaconf: records where it ran (the hostname of its UTS namespace) and its
    argv, then does what loading the image does to sysfs: the card's port reports the image's AFU id
    (written through the common sysfs path, so into the tree of the host it runs on)."""
    tool = work / "bin" / "fpgaconf"
    tool.parent.mkdir(parents=True, exist_ok=True)
    tool.write_text(
        f"#!{sys.executable}\n"
        "import json, os, pathlib, socket, sys\n"
        f"with open({str(work / 'fpgaconf.calls')!r}, 'a') as fh:\n"
        "    fh.write(json.dumps([socket.gethostname(), sys.argv[1:]]) + '\\n')\n"
        "image = json.loads(pathlib.Path(sys.argv[-1]).read_text())\n"
        "bus = sys.argv[sys.argv.index('--bus') + 1].removeprefix('0x')\n"
        f"for top, dirs, files in os.walk({str(sysfs)!r} + f'/devices/pci0000:{{bus}}'):\n"
        "    if 'afu_id' in files:\n"
        "        pathlib.Path(top, 'afu_id').write_text(image['afu_id'] + '\\n')\n")
    tool.chmod(0o755)
    return tool


def fpgaconf_calls(c) -> list[list]:
    record = c.work / "fpgaconf.calls"
    return [json.loads(line) for line in record.read_text().splitlines()] if record.is_file() else []


def bitstream_dir(work: Path) -> Path:
    """The `[driver_options.bitstreams] dir`: one image for the fixture's PAC Arria10 cards."""
    d = work / "bitstreams"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{BITSTREAM}.gbs").write_text(json.dumps({"afu_id": NEW_AFU}))
    (d / f"{BITSTREAM}.gbs.json").write_text(json.dumps({
        "bs-uuid": BITSTREAM, "bs-name": "aes-128", "vendor": "Intel", "board": "PAC_ARRIA10", "version": "1.0",
        "region_uuid": "ce48969398f05f33946d560708be108a", "function_uuid": NEW_AFU, "function_name": "aes"}))
    return d


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
    return waiting.wait_for(predicate, timeout, interval=interval, what=what, detail=detail)


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


def test_the_harness_runs_the_yamls_start_commands_with_only_the_documented_changes():
    """No namespaces needed: each line the harness runs is the YAML's own, less `ray stop` and the
    autoscaler's config, plus the test-only `ray start` options and the head's address for `auto`."""
    import yaml

    config = yaml.safe_load(netns.CLUSTER_YAML.read_text())
    for kind in ("head", "worker"):
        ran = netns.yaml_start_lines(kind, node_ip="10.9.9.10", temp_dir="/tmp/rbn-x/0", head_address="10.9.9.10:6379")
        extra = "--node-ip-address=10.9.9.10 --temp-dir=/tmp/rbn-x/0 --object-store-memory=83886080 "
        extra += "--include-dashboard=false " if kind == "head" else ""
        undone = [line.replace(extra, "").replace("--address 10.9.9.10:6379", "--address auto") for line in ran]
        declared = [re.sub(r" --autoscaling-config=\S+", "", " ".join(line.split()))
                    for line in config[f"{kind}_start_ray_commands"] if not line.strip().endswith("/ray stop")]
        assert undone == declared
        assert sum("/ray start " in line for line in ran) == 1
        assert all("RAY_AUTH_MODE=token" in line for line in ran)  # token auth as operators run it
    assert any("/rayborg --config" in line and " serve " in line
               for line in netns.yaml_start_lines("head", node_ip="x", temp_dir="y", head_address="z:6379"))


def test_the_harness_runs_the_yamls_setup_commands_with_only_the_documented_changes(tmp_path):
    """No namespaces needed: the setup lines are the YAML's own with `python3` named and pip offline;
    the copy of the checkout leaves out what rsync_exclude and .gitignore leave out."""
    import yaml

    config = yaml.safe_load(netns.CLUSTER_YAML.read_text())
    ran = netns.yaml_setup_lines(python="/opt/py/bin/python3.11", wheelhouse="/w")
    undone = [line.replace("/opt/py/bin/python3.11", "python3").replace(
        " --no-deps --no-index --find-links=/w", "") for line in ran]
    assert undone == [" ".join(line.split()) for line in config["setup_commands"]]
    assert sum("/pip install --no-deps --no-index --find-links=/w " in line for line in ran) == 1
    assert netns.copy_checkout(tmp_path / "rayborg") > 100
    assert (tmp_path / "rayborg" / "pyproject.toml").is_file()
    assert (tmp_path / "rayborg" / "ray_cluster.yaml").is_file()
    assert not (tmp_path / "rayborg" / ".venv").exists() and not (tmp_path / "rayborg" / ".git").exists()
    assert not list((tmp_path / "rayborg").rglob("__pycache__"))
    assert netns._excluded("bench/results/tmp/x.json", ["bench/results/tmp"])
    assert not netns._excluded("bench/run.py", ["bench/results/tmp"])


def test_each_host_runs_the_rayborg_its_setup_commands_installed(cluster):
    """The hosts' daemon and actors import rayborg from the venv the YAML's setup_commands made and
    installed from the copied checkout, not from this test's checkout."""
    out = cluster.run(HOST1,
                      "~/rayborg-venv/bin/python -c 'import rayborg.actors.binder as b; print(\"AT\", b.__file__)'")
    (line,) = [line for line in out.splitlines() if line.startswith("AT ")]
    assert line[3:].startswith(str(cluster.hosts[HOST1].home / "rayborg-venv" / "lib")), line
    assert "site-packages/rayborg/actors/binder.py" in line
    # The head's serve process runs the same venv's rayborg.
    (pid, *_) = cluster.serve_pids()
    assert netns._cmdline(pid)[1].startswith(str(cluster.head.home / "rayborg-venv" / "bin")) or \
        str(cluster.head.home / "rayborg-venv") in " ".join(netns._cmdline(pid))


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
    status = json.loads(line[7:])
    assert {h: s[0] for h, s in status.items()} == {h: nodes[h]["NodeID"] for h in TREES}
    assert {s[1] for s in status.values()} == {str(c.sysfs)}


# -- (b) ---------------------------------------------------------------------------------------------
def test_a_bind_on_a_remote_host_reaches_that_hosts_agent(cluster):
    """A standalone vGPU bind for rb-host1 creates the mdev there: the create lands in rb-host1's
    own tree, which only rb-host1's mount namespace has at the sysfs path; the unbind removes it."""
    from sysfs_helpers import FakeKernel

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


def test_a_bind_that_programs_runs_the_vendor_tool_on_that_host(cluster):
    """A standalone bind whose profile names a bitstream, for rb-host2: the vendor tool runs there
    (its hostname is rb-host2's), on the card the bind chose, and the new function is reported back."""
    c = cluster
    wait_all_reported(c)
    ensure_profile(c, "netns-fpga-aes", {"resources:FPGA": "1", "accel:bitstream_id": BITSTREAM})
    arq = create_arq(c, "netns-fpga-aes")
    resp = bind(c, arq, HOST2)
    assert resp.status_code == 202, resp.text
    body = wait_resolved(c, arq, timeout=90)
    assert body["state"] == "Bound", body
    (dep,) = [d for d in deployables(c, HOST2) if d["rp_uuid"] == body["device_rp_uuid"]]
    bus = dep["name"].split("_")[2]  # rb-host2_0000_be_00_0
    calls = fpgaconf_calls(c)
    assert [(host, argv[argv.index("--bus") + 1]) for host, argv in calls] == [(HOST2, f"0x{bus}")], calls
    assert calls[0][1][-1] == str(c.work / "bitstreams" / f"{BITSTREAM}.gbs")
    wait_for(lambda: next(d for d in deployables(c, HOST2) if d["name"] == dep["name"]).get("bitstream_id")
             == BITSTREAM, 30, f"{dep['name']} reported with the new bitstream",
             detail=lambda: str(deployables(c, HOST2)))
    unbind(c, arq)


# -- (c), (d) ----------------------------------------------------------------------------------------
# How soon a lost host is marked lost (and nothing more binds there), as the README states it. Ray
# declares a node dead after health_check_failure_threshold (5) failed checks, health_check_period_ms
# (3 s) apart, each waiting up to health_check_timeout_ms (10 s); the supervisor polls Ray every 2 s.
# A raylet that dies fails each check at once: 5 x 3 + 2 = ~17 s (measured 13-15 s). A host that goes
# silent (power, network) times each check out: 5 x (10 + 3) + 2 = ~67 s (measured 66 s). The limits
# below leave room for a busy 2-core machine.
LOST_AFTER_CRASH_S = 30.0
LOST_AFTER_SILENCE_S = 90.0


def fpga_rps(c, host: str) -> list[str]:
    return [d["rp_uuid"] for d in deployables(c, host) if "_5e_" in d["name"] or "_be_" in d["name"]]


def actor_pids(c) -> dict[str, int]:
    """Every rayborg actor by name with the pid it runs as (asked through Ray from the head)."""
    out = c.ray_script(
        "import json, ray\n"
        f"ray.init(address={c.head_address!r}, namespace='rayborg', log_to_driver=False, logging_level='ERROR')\n"
        "names = [a['name'] for a in ray.util.list_named_actors(all_namespaces=True) if a['namespace'] == 'rayborg']\n"
        "st = {n: ray.get(ray.get_actor(n).status.remote(), timeout=30) for n in names}\n"
        "print('PIDS', json.dumps({n: s['pid'] for n, s in st.items()}))\n")
    (line,) = [x for x in out.splitlines() if x.startswith("PIDS ")]
    return json.loads(line[5:])


def test_a_worker_host_lost_binds_nothing_there_and_comes_back(cluster):
    c = cluster
    wait_all_reported(c)
    wait_placement_agrees(c)
    kept = devices_by_host(c)[HOST2]
    fpgas = fpga_rps(c, HOST2)
    assert len(fpgas) == 2
    ensure_profile(c, "netns-fpga", {"resources:FPGA": "1"})  # only rb-host2 has FPGAs

    killed = c.kill_raylet(HOST2)
    wait_for(lambda: host_states(c).get(HOST2) == "lost", LOST_AFTER_CRASH_S, "rb-host2 marked lost",
             detail=lambda: f"{host_states(c)}\n{c.serve_log()[-3000:]}")
    lost_after = time.monotonic() - killed
    c.timings["raylet killed -> host lost"] = lost_after
    print(f"\nrb-host2's raylet killed -> marked lost in {lost_after:.1f} s")
    assert host_states(c) == {HEAD: "up", HOST1: "up", HOST2: "lost"}
    assert devices_by_host(c)[HOST2] == kept  # its devices are kept
    # Nothing binds there: a standalone bind finds no FPGA (there is none elsewhere) ...
    for hostname in (HOST2, None):
        arq = create_arq(c, "netns-fpga")
        resp = bind(c, arq, hostname)
        assert resp.status_code == 409, resp.text
        assert arq_body(c, arq)["state"] == "Initial"
    # ... and a Nova-style bind naming one of its devices fails, saying why.
    arq = create_arq(c, "netns-fpga")
    resp = bind(c, arq, HOST2, fpgas[0])
    assert resp.status_code == 202, resp.text
    body = wait_resolved(c, arq)
    assert body["state"] == "BindFailed"
    from sqlmodel import select

    from rayborg.store.tables import ExtARQ

    error = c.store.query(lambda s: s.exec(select(ExtARQ).where(ExtARQ.uuid == arq)).one().bind_error)
    assert "left the cluster" in error, error

    # The host back: what `ray stop` would end there is ended (by pid), then the YAML's start again.
    c.stop_host(HOST2)
    started = time.monotonic()
    c.timings["restart rb-host2 (ray start)"] = c.start_host(HOST2)
    wait_for(lambda: host_states(c).get(HOST2) == "up", 90, "rb-host2 up again",
             detail=lambda: f"{host_states(c)}\n{c.serve_log()[-3000:]}")
    c.timings["ray start -> host up"] = time.monotonic() - started
    assert devices_by_host(c)[HOST2] == kept
    wait_placement_agrees(c)
    arq = create_arq(c, "netns-fpga")
    resp = bind(c, arq, HOST2)
    assert resp.status_code == 202, resp.text
    body = wait_resolved(c, arq)
    assert body["state"] == "Bound" and body["device_rp_uuid"] in fpgas, body
    alive = {n["Labels"].get("rayborg-host"): n["NodeManagerAddress"] for n in c.ray_nodes() if n["Alive"]}
    assert alive == {name: host.ip for name, host in c.hosts.items()}


# -- (e) ---------------------------------------------------------------------------------------------
def bound_arqs(c) -> dict[str, tuple[str, str]]:
    resp = api(c, "GET", "/v2/accelerator_requests")
    assert resp.status_code == 200, resp.text
    return {a["uuid"]: (a["hostname"], a["device_rp_uuid"]) for a in resp.json()["arqs"] if a["state"] == "Bound"}


def test_the_daemon_restarted_loses_nothing_and_binds_continue(cluster):
    from sysfs_helpers import FakeKernel

    c = cluster
    wait_all_reported(c)
    tree, kernel = c.trees[HOST1], FakeKernel(c.trees[HOST1])
    ensure_profile(c, "netns-vgpu", {"resources:VGPU": "1"})
    before_restart = create_arq(c, "netns-vgpu")
    assert bind(c, before_restart, HOST1).status_code == 202
    held = wait_resolved(c, before_restart)
    assert held["state"] == "Bound", held
    assert kernel.settle() == [f"create {held['attach_handle_uuid']}"]
    devices, bound, actors = devices_by_host(c), bound_arqs(c), actor_pids(c)
    assert before_restart in bound
    assert {f"rayborg:host:{h}" for h in TREES} | {"rayborg:placement-sync", "rayborg:binder:0"} <= set(actors)

    stopped = time.monotonic()
    c.stop_serve()
    c.timings["stop serve"] = time.monotonic() - stopped
    c.timings["restart serve"] = c.start_serve()

    assert actor_pids(c) == actors  # the detached actors lived on: the same processes
    wait_all_reported(c)
    assert devices_by_host(c) == devices and bound_arqs(c) == bound
    wait_placement_agrees(c)
    # Binds continue: a new one on the remote host, and the unbind of one bound before the restart.
    after_restart = create_arq(c, "netns-vgpu")
    assert bind(c, after_restart, HOST1).status_code == 202
    body = wait_resolved(c, after_restart)
    assert body["state"] == "Bound" and body["attach_handle_uuid"] != held["attach_handle_uuid"], body
    assert kernel.settle() == [f"create {body['attach_handle_uuid']}"]
    unbind(c, before_restart)
    removed: list[str] = []
    wait_for(lambda: removed.extend(kernel.settle()) or removed, 30, "the mdev's removal on rb-host1")
    assert removed == [f"remove {held['attach_handle_uuid']}"]
    assert mdevs(tree).count(body["attach_handle_uuid"]) == 1
    wait_placement_agrees(c)


def test_a_worker_host_cut_off_from_the_network_is_marked_lost(cluster):
    """The host stops answering (its link down: power lost, network split) instead of its raylet
    dying: Ray's health checks now wait out their timeouts before the node is declared dead."""
    c = cluster
    wait_all_reported(c)
    cut = c.partition(HOST2)
    try:
        wait_for(lambda: host_states(c).get(HOST2) == "lost", LOST_AFTER_SILENCE_S, "rb-host2 marked lost",
                 detail=lambda: f"{host_states(c)}\n{c.serve_log()[-3000:]}")
        c.timings["link down -> host lost"] = lost_after = time.monotonic() - cut
        print(f"\nrb-host2 cut off -> marked lost in {lost_after:.1f} s")
    finally:
        c.heal(HOST2)
    c.stop_host(HOST2)  # a raylet GCS declared dead does not come back by itself
    c.start_host(HOST2)
    wait_for(lambda: host_states(c).get(HOST2) == "up", 90, "rb-host2 up again")

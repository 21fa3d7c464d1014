"""`rayborg serve` end to end: a real process with Ray, simulated devices, real Placement and a Nova
recorder, driven through the REST API from discovery to a Bound ARQ and Nova's event."""

import json
import socket
import subprocess
import sys
import textwrap
import urllib.request
import uuid
from pathlib import Path

import pytest

from factories import nova_bind_ops
from serve_process import ServeProcess
from waiting import wait_for

sys.path.insert(0, str(Path(__file__).parents[1] / "actors"))

pytestmark = [pytest.mark.xdist_group("ray"), pytest.mark.slow]


def call(method: str, url: str, body=None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as err:
        raw = err.read()
        return err.code, json.loads(raw) if raw else None


def test_serve_no_actors_starts_answers_and_stops_cleanly(tmp_path):
    server = ServeProcess(tmp_path, "--no-actors").start()
    try:
        status, body = call("GET", f"{server.url}/")
        assert status == 200 and body["versions"][0]["links"][0]["href"] == f"{server.url}/v2"
        assert call("GET", f"{server.url}/v2/devices")[1] == {"devices": []}
    finally:
        assert server.stop() == 0
    assert "rayborg serving the Cyborg v2 API" in server.log.read_text()


def test_serve_with_actors_exits_when_its_process_group_is_terminated(tmp_path):
    """Ray's processes get the SIGTERM too, so serve's shutdown finds Ray gone: it must still exit."""
    server = ServeProcess(tmp_path, "--fake-devices", "fpga:1").start()
    try:
        wait_for(lambda: call("GET", f"{server.url}/v2/devices")[1]["devices"], what="the fake device")
    finally:
        code = server.stop_group(timeout=60)
    assert code is not None, f"serve hung after SIGTERM:\n{server.log.read_text()[-3000:]}"


FIND_THE_DAEMON = textwrap.dedent("""
    import json, sys, rayborg
    rb = rayborg.connect()  # the daemon of $RAYBORG_DATABASE_URL
    out = {"devices": rb.devices(), "daemon": rb.daemon}
    try:
        rayborg.connect(sys.argv[1], database_url=sys.argv[2])
    except rayborg.RayborgError as exc:
        out["refused"] = str(exc)
    print(json.dumps(out))
""")


def test_the_cli_and_python_api_find_the_daemon_of_their_database(tmp_path):
    """Not whatever Ray cluster runs on this machine: the one the daemon of their database recorded
    in its lease; none of their own is an error, and a daemon of another database is refused."""
    from rayborg.store import daemon_lease

    server = ServeProcess(tmp_path, "--fake-devices", "fpga:1").start()
    other = f"sqlite:///{tmp_path / 'other.db'}"
    env = {k: v for k, v in server.env.items() if k not in ("RAYBORG_DATABASE_URL", "RAY_AUTH_MODE")}
    try:
        # Serve answers before its actors are up; the lease names its Ray cluster once they are.
        daemon = wait_for(lambda: (lambda d: d if d.ray_address != daemon_lease.RAY_STARTING else None)(
            daemon_lease.find(server.database_url)), what="the Ray address in the lease")
        assert (daemon.pid, daemon.api_port, daemon.database_url) == (server.proc.pid, server.port,
                                                                      server.database_url)
        log = server.log.read_text()
        assert f"Ray started locally (address {daemon.ray_address}, dashboard {daemon.dashboard_url})" in log
        assert daemon.dashboard_url.startswith("http://127.0.0.1:")

        cli = [sys.executable, "-m", "rayborg", "devices", "--json", "--database-url"]
        out = subprocess.run([*cli, server.database_url], env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        assert [d["family"] for d in json.loads(out.stdout)] == ["FPGA"]
        out = subprocess.run([*cli, other], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 1 and out.stdout == ""
        assert out.stderr == (f"rayborg devices: no rayborg daemon runs for database {other} (start one with "
                              f"`rayborg serve` with these settings, or name the database and Ray cluster of "
                              f"another)\n")

        out = subprocess.run([sys.executable, "-c", FIND_THE_DAEMON, daemon.ray_address, other],
                             env=env | {"RAYBORG_DATABASE_URL": server.database_url}, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        found = json.loads(out.stdout)
        assert len(found["devices"]) == 1 and found["daemon"]["pid"] == server.proc.pid
        assert found["refused"].startswith(f"the rayborg on the Ray cluster at {daemon.ray_address} uses "
                                           f"database {server.database_url}, not {other}")
    finally:
        assert server.stop() == 0
    assert daemon_lease.find(server.database_url) is None  # given back at the end


def test_discovery_to_bound_arq_to_nova_event(tmp_path, placement_server, nova):
    from rayborg.actors.placement_client import PlacementClient
    from rayborg.store.placement_state import provider_uuid

    host = socket.gethostname()
    placement = PlacementClient(placement_server.url)
    if placement.get_provider(provider_uuid(host)) is None:
        placement._request("POST", "/resource_providers", {"name": host, "uuid": provider_uuid(host)})
    server = ServeProcess(tmp_path, "--fake-devices", "fpga:2x2", "--placement-url", placement_server.url,
                          "--nova-url", nova.url, "--report-interval", "1").start()
    try:
        api = f"{server.url}/v2"
        deps = wait_for(lambda: call("GET", f"{api}/deployables")[1]["deployables"], what="discovery")
        dep = next(d for d in deps if d["name"].endswith("fpga_0"))
        wait_for(lambda: placement.get_provider(dep["rp_uuid"]), what="the device RP in Placement")
        assert placement.get_provider(dep["rp_uuid"])["parent_provider_uuid"] == provider_uuid(host)

        status, _ = call("POST", f"{api}/device_profiles", [{"name": "e2e", "groups": [{"resources:FPGA": "1"}]}])
        assert status == 201
        status, body = call("POST", f"{api}/accelerator_requests", {"device_profile_name": "e2e"})
        assert status == 201
        arq = body["arqs"][0]["uuid"]
        instance = str(uuid.uuid4())
        status, _ = call("PATCH", f"{api}/accelerator_requests", {arq: nova_bind_ops(host, dep["rp_uuid"], instance)})
        assert status == 202
        resolved = wait_for(lambda: (lambda r: r[1]["arqs"] if r[0] == 200 else None)(
            call("GET", f"{api}/accelerator_requests?instance={instance}&bind_state=resolved")), what="bind")
        assert resolved[0]["state"] == "Bound" and resolved[0]["attach_handle_type"] == "TEST_PCI"
        assert set(resolved[0]["attach_handle_info"]) == {"bus", "device", "domain", "function"}
        wait_for(lambda: nova.delivered_events(), what="Nova's event")
        assert nova.delivered_events() == [{"name": "accelerator-request-bound", "server_uuid": instance,
                                            "tag": arq, "status": "completed"}]

        # Disabling the device reserves its inventory in Placement.
        device = call("GET", f"{api}/devices")[1]["devices"][0]["uuid"]
        assert call("POST", f"{api}/devices/{device}/disable")[0] == 200
        devices_deps = [d for d in call("GET", f"{api}/deployables")[1]["deployables"]
                        if d["device_id"] == dep["device_id"]]
        rp = devices_deps[0]["rp_uuid"]
        wait_for(lambda: placement.get_inventories(rp)[1]["FPGA"]["reserved"] == 2, what="reserved = total")

        # Programming through the API: recorded, done by the host's agent, seen by the next discovery.
        other = next(d for d in deps if d["name"].endswith("fpga_1"))
        image = "76babc1b-3222-4992-a046-52441e403577"
        status, body = call("PATCH", f"{api}/deployables/{other['uuid']}/program",
                            [{"op": "replace", "path": "/program", "value": [{"image_uuid": image}]}])
        assert status == 200 and body["uuid"] == other["uuid"]
        wait_for(lambda: call("GET", f"{api}/deployables/{other['uuid']}")[1]["bitstream_id"] == image,
                 what="the programmed bitstream in the store")

        # Operators find every actor by name in the Ray dashboard's state API.
        status, actors = call("GET", "http://127.0.0.1:8265/api/v0/actors?limit=100")
        assert status == 200
        names = {a["name"] for a in actors["data"]["result"]["result"] if a["state"] == "ALIVE"}
        assert {f"rayborg:host:{host}", "rayborg:placement-sync", "rayborg:binder:0"} <= names
        assert "rayborg:binder:1" not in names  # one binder by default
    finally:
        assert server.stop() == 0


def test_serve_joins_an_existing_ray_cluster(ray_cluster, tmp_path):
    """`rayborg serve --address` on a running 3-node cluster: it answers, every node gets its
    HostAgent there and their devices reach the API; the cluster outlives serve."""
    import ray

    from rayborg.actors.runtime_config import NAMESPACE, host_agent_name
    from runtime_helpers import kill_runtime

    hosts = set(ray_cluster["nodes"])
    server = ServeProcess(tmp_path, "--address", ray_cluster["cluster"].address, "--fake-devices", "fpga:1",
                          "--report-interval", "3600", env={"RAY_AUTH_MODE": "disabled"})
    try:
        server.start(timeout=120)
        status, body = call("GET", f"{server.url}/v2")
        assert status == 200 and body["id"] == "v2.0"
        devices = wait_for(lambda: (lambda d: d if {x["hostname"] for x in d} == hosts else None)(
            call("GET", f"{server.url}/v2/devices")[1]["devices"]), timeout=120, what="a device from every host")
        assert len(devices) == 3 and {d["type"] for d in devices} == {"FPGA"}
        nodes = {h: n.node_id for h, n in ray_cluster["nodes"].items()}
        for host in hosts:  # the agents serve found devices through are the cluster's, one per node
            agent = ray.get_actor(host_agent_name(host), namespace=NAMESPACE)
            assert ray.get(agent.status.remote(), timeout=30)["node_id"] == nodes[host]
        assert f"joined at {ray_cluster['cluster'].address}" in server.log.read_text()
    finally:
        code = server.stop()
        kill_runtime()  # detached actors of a joined cluster outlive serve (it did not start that Ray)
    assert code == 0, server.log.read_text()[-3000:]
    assert len([n for n in ray.nodes() if n["Alive"]]) == len(hosts)  # serve left the cluster running

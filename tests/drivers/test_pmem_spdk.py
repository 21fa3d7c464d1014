"""PMEM namespaces from sysfs, and SPDK through a fake JSON-RPC server on a unix socket."""

from __future__ import annotations

import json
import socket
import threading

import pytest

from rayborg.drivers import discover_host


def test_pmem_report_by_size(family_tree):
    r = discover_host("n1", family_tree("pmem"), drivers=["pmem"], dev_root="/devroot")
    assert r.errors == [] and [d.key for d in r.devices] == ["pmem:region0", "pmem:region1"]
    region0 = r.devices[0]
    assert (region0.type, region0.vendor, region0.controlpath_id.cpid_type) == ("PMEM", "0x8086", "PMEM")
    assert [(d.name, d.num_accelerators, d.resource_class) for d in region0.deployables] == [
        ("n1_region0_12GB", 1, "CUSTOM_PMEM_NAMESPACE_12GB"), ("n1_region0_6GB", 2, "CUSTOM_PMEM_NAMESPACE_6GB")]
    six = region0.deployables[1]
    assert six.traits == ["CUSTOM_PMEM_NAMESPACE_6GB"]
    assert [h.attach_info["namespace"] for h in six.attach_handles] == ["namespace0.0", "namespace0.1"]
    assert six.attach_handles[0].attach_type == "PMEM"
    assert six.attach_handles[0].attach_info == {"dev": "/devroot/dax0.0", "name": "ns0", "namespace": "namespace0.0",
                                                 "size": "6442450944", "uuid": "0b6a5f1e-1111-4a7a-9c11-000000000000"}


def test_pmem_labels_from_config(family_tree):
    r = discover_host("n1", family_tree("pmem"), drivers=["pmem"],
                      options={"pmem": {"pmem_namespaces": "SMALL:ns0|ns1|ns3,LARGE:ns2|ns9"}})
    assert [(d.name, d.num_accelerators) for dev in r.devices for d in dev.deployables] == [
        ("n1_region0_LARGE", 1), ("n1_region0_SMALL", 2), ("n1_region1_SMALL", 1)]
    (err,) = r.errors  # a configured namespace that does not exist
    assert err.device == "ns9" and "not found" in err.message


def test_pmem_bad_size_keeps_other_region(family_tree, builder):
    root = family_tree("pmem")
    builder.write("devices/LNXSYSTM:00/ndbus0/region0/namespace0.1/size", "6G")
    r = discover_host("n1", root, drivers=["pmem"])
    assert [d.key for d in r.devices] == ["pmem:region1"]
    assert r.errors[0].device == "namespace0.1" and r.errors[0].file.endswith("namespace0.1/size")


def test_pmem_absent_bus_is_empty(sysfs):
    assert discover_host("n1", sysfs, drivers=["pmem"]).model_dump()["devices"] == []


# ---- SPDK ---------------------------------------------------------------------------------

SUBSYSTEMS = [
    {"nqn": "nqn.2014-08.org.nvmexpress.discovery", "subtype": "Discovery", "listen_addresses": [], "namespaces": []},
    {"nqn": "nqn.2016-06.io.spdk:cnode1", "subtype": "NVMe", "serial_number": "SPDK00000000000001",
     "model_number": "SPDK bdev Controller", "max_namespaces": 32,
     "listen_addresses": [{"trtype": "TCP", "adrfam": "IPv4", "traddr": "10.0.0.5", "trsvcid": "4420"}],
     "namespaces": [{"nsid": 1, "bdev_name": "Malloc0", "name": "Malloc0"}, {"nsid": 2, "bdev_name": "Nvme0n1"}]},
]
VHOST = [{"ctrlr": "vhost.0", "cpumask": "0x1", "socket": "/var/tmp/vhost.0",
          "backend_specific": {"block": {"readonly": False, "bdev": "Malloc1"}}}]


@pytest.fixture
def spdk_server(tmp_path):
    """A tiny SPDK-like JSON-RPC server: one request per connection, answer in two chunks, no newline."""
    path = tmp_path / "spdk.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(8)
    answers = {"nvmf_get_subsystems": SUBSYSTEMS, "vhost_get_controllers": VHOST}
    seen: list[str] = []

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                req = json.loads(conn.recv(65536).decode())
                seen.append(req["method"])
                result = answers.get(req["method"])
                body = ({"jsonrpc": "2.0", "id": req["id"], "result": result} if not isinstance(result, dict)
                        or "code" not in result else {"jsonrpc": "2.0", "id": req["id"], "error": result})
                data = json.dumps(body).encode()
                conn.sendall(data[: len(data) // 2])
                conn.sendall(data[len(data) // 2:])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path, answers, seen
    srv.close()


def test_spdk_report(spdk_server):
    path, _, seen = spdk_server
    r = discover_host("n1", "/nonexistent", drivers=["spdk"], options={"spdk": {"socket": str(path)}})
    assert seen == ["nvmf_get_subsystems", "vhost_get_controllers"] and r.errors == []
    assert [d.key for d in r.devices] == ["spdk:nqn.2016-06.io.spdk:cnode1", "spdk:vhost:vhost.0"]
    nvmf, vhost = r.devices
    assert (nvmf.type, nvmf.model, nvmf.vendor_board_info) == ("NVME", "SPDK bdev Controller", "SPDK00000000000001")
    (dep,) = nvmf.deployables
    assert dep.name == "n1_nqn_2016-06_io_spdk_cnode1" and dep.num_accelerators == 2
    assert (dep.resource_class, dep.traits) == ("CUSTOM_SPDK_NVMF", ["CUSTOM_SPDK", "CUSTOM_SPDK_NVMF_TCP"])
    assert dep.attach_handles[1].attach_info == {"bdev": "Nvme0n1", "nqn": "nqn.2016-06.io.spdk:cnode1", "nsid": "2",
                                                 "traddr": "10.0.0.5", "trsvcid": "4420", "trtype": "TCP"}
    vdep = vhost.deployables[0]
    assert (vhost.type, vdep.resource_class, vdep.traits) == ("SSD", "CUSTOM_SPDK_VHOST",
                                                              ["CUSTOM_SPDK", "CUSTOM_SPDK_VHOST_BLOCK"])
    assert vdep.attach_handles[0].attach_info == {"controller": "vhost.0", "kind": "block", "socket": "/var/tmp/vhost.0"}


def test_spdk_rpc_errors(spdk_server):
    path, answers, _ = spdk_server
    answers["vhost_get_controllers"] = {"code": -32601, "message": "Method not found"}  # built without vhost
    answers["nvmf_get_subsystems"] = {"code": -32603, "message": "internal"}
    r = discover_host("n1", "/nonexistent", drivers=["spdk"], options={"spdk": {"socket": str(path)}})
    assert r.devices == []
    (err,) = r.errors
    assert err.driver == "spdk" and err.device == str(path) and "internal (code -32603)" in err.message


def test_spdk_malformed_entry_keeps_the_rest(spdk_server):
    path, answers, _ = spdk_server
    answers["nvmf_get_subsystems"] = [{"subtype": "NVMe"}, *SUBSYSTEMS]
    r = discover_host("n1", "/nonexistent", drivers=["spdk"], options={"spdk": {"socket": str(path)}})
    assert len(r.devices) == 2 and "malformed entry: KeyError" in r.errors[0].message


def test_spdk_not_running(tmp_path):
    r = discover_host("n1", tmp_path, drivers=["spdk"], options={"spdk": {"socket": str(tmp_path / "none.sock")}})
    assert r.devices == [] and r.errors == []
    dead = tmp_path / "dead.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(dead))
    s.close()  # socket file left behind by a crashed target
    r = discover_host("n1", tmp_path, drivers=["spdk"], options={"spdk": {"socket": str(dead)}})
    assert r.devices == [] and "ConnectionRefusedError" in r.errors[0].message

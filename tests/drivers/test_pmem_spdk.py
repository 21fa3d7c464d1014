"""PMEM namespaces from sysfs, and SPDK through a fake JSON-RPC server on a unix socket; both example
hosts (drivers/fixture_trees/pmem, drivers/fixture_trees/spdk/rpc.json) into the store."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from spdk_standin import SpdkStandin, example_answers
from sqlmodel import select

from rayborg.drivers import discover_host
from rayborg.drivers.sysfs_tree import SysfsBuilder
from rayborg.store.host_reports import apply_report
from rayborg.store.tables import AttachHandle, ControlPathID, Deployable, Device


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


def test_pmem_kernel_and_ndctl_mode_names_are_one(family_tree, tmp_path):
    """The example host says what the kernel's mode files say (dax, memory, raw); a tree written
    with ndctl's names (devdax, fsdax) is the same host."""
    kernel = discover_host("n1", family_tree("pmem"), drivers=["pmem"])
    ndctl_names = {"dax": "devdax", "memory": "fsdax"}
    desc = json.loads((FIXTURES / "pmem" / "tree.json").read_text())
    for region in desc["nd"]:
        for ns in region["namespaces"]:
            ns["mode"] = ndctl_names.get(ns["mode"], ns["mode"])
    r = discover_host("n1", SysfsBuilder(tmp_path / "ndctl").apply(desc).root, drivers=["pmem"])
    assert r.devices == kernel.devices and r.errors == kernel.errors == []
    assert sum(d.num_accelerators for d in r.deployables()) == 4  # fsdax, raw seed and dax seed left out


@pytest.mark.parametrize("mode", ["memory", "fsdax", "safe", "sector", "raw"])
def test_pmem_only_devdax_namespaces_are_handles(family_tree, builder, mode):
    root = family_tree("pmem")
    builder.write(f"{R0}/namespace0.1/mode", mode)
    six = discover_host("n1", root, drivers=["pmem"]).devices[0].deployables[1]
    assert [h.attach_info["namespace"] for h in six.attach_handles] == ["namespace0.0"]


def test_pmem_seed_of_size_zero_is_skipped(family_tree, builder):
    """An idle seed namespace left in dax mode (size 0) is no 0 MB namespace."""
    root = family_tree("pmem")
    builder.nd_namespace("region1", "namespace1.1", mode="dax", size=0)
    r = discover_host("n1", root, drivers=["pmem"])
    assert r.errors == [] and [d.name for d in r.devices[1].deployables] == ["n1_region1_6GB"]


def test_pmem_dev_name_is_the_device_dax_child(family_tree):
    """/dev/<name> is the device-dax under the nd_dax device (dax bus, or the older `dax/` class
    folder), which need not share the nd_dax's name; without one, the nd_dax's name."""
    root = family_tree("pmem")
    (root / R0 / "dax0.0" / "dax0.0").rename(root / R0 / "dax0.0" / "dax0.7")
    (root / R0 / "dax0.1" / "dax").mkdir()
    (root / R0 / "dax0.1" / "dax0.1").rename(root / R0 / "dax0.1" / "dax" / "dax0.3")
    shutil.rmtree(root / R0 / "dax0.2" / "dax0.2")
    r = discover_host("n1", root, drivers=["pmem"], dev_root="/devroot")
    devs = {h.attach_info["namespace"]: h.attach_info["dev"] for d in r.deployables() for h in d.attach_handles}
    assert devs == {"namespace0.0": "/devroot/dax0.7", "namespace0.1": "/devroot/dax0.3",
                    "namespace0.2": "/devroot/dax0.2", "namespace1.0": "/devroot/dax1.0"}


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


R0 = "devices/LNXSYSTM:00/ndbus0/region0"
FIXTURES = Path(__file__).resolve().parents[2] / "drivers" / "fixture_trees"


@pytest.mark.parametrize("break_it, device, file, message", [
    (lambda b: b.write(f"{R0}/numa_node", "banana"), "region0", "region0/numa_node", "non-numeric value 'banana'"),
    (lambda b: (b.root / R0 / "namespace0.0/mode").unlink(), "namespace0.0", "namespace0.0/mode",
     "missing sysfs file"),
    (lambda b: b.unreadable(f"{R0}/namespace0.1/uuid"), "namespace0.1", "namespace0.1/uuid", "unreadable sysfs file"),
    (lambda b: (b.root / R0 / "dax0.0").rename(b.root / R0 / "gone"), "namespace0.0", "namespace0.0/mode",
     "devdax namespace without a dax device"),
], ids=["non-numeric numa_node", "missing mode", "unreadable uuid", "dax device gone"])
def test_pmem_bad_region_is_an_error_the_other_region_is_reported(family_tree, builder, break_it, device, file,
                                                                   message):
    root = family_tree("pmem")
    region1 = discover_host("n1", root, drivers=["pmem"]).devices[1]
    break_it(builder)
    r = discover_host("n1", root, drivers=["pmem"])
    assert r.devices == [region1]
    broken = [e for e in r.errors if e.device == device]
    assert len(broken) == 1 and broken[0].driver == "pmem"
    assert broken[0].file.endswith(file) and message in broken[0].message


def test_pmem_dax_without_namespace_file_and_broken_namespace_link(family_tree, builder):
    root = family_tree("pmem")
    (root / R0 / "dax0.0/namespace").unlink()
    builder.broken_link("bus/nd/devices/namespace1.0")
    r = discover_host("n1", root, drivers=["pmem"])
    assert r.devices == []  # region0 lost namespace0.0's dax, region1 its only namespace
    assert [(e.device, e.message) for e in r.errors] == [
        ("dax0.0", "missing sysfs file"), ("namespace0.0", "devdax namespace without a dax device"),
        ("namespace1.0", "broken symlink")]
    assert r.errors[0].file.endswith("dax0.0/namespace") and r.errors[2].file.endswith("devices/namespace1.0")


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
                if callable(result):  # a misbehaving target: the test writes the bytes itself
                    result(conn, req)
                    continue
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


def spdk(path, timeout: float = 5.0):
    return discover_host("n1", "/nonexistent", drivers=["spdk"], options={"spdk": {"socket": str(path),
                                                                                   "timeout": timeout}})


def test_spdk_hung_target_costs_one_timeout_and_one_error(spdk_server):
    path, answers, seen = spdk_server
    answers["nvmf_get_subsystems"] = lambda conn, req: conn.recv(1)  # reads, never answers, until we hang up
    start = time.monotonic()
    r = spdk(path, timeout=1.0)
    assert time.monotonic() - start < 1.8  # not once per method
    assert r.devices == [] and seen == ["nvmf_get_subsystems"]
    (err,) = r.errors
    assert (err.driver, err.device) == ("spdk", str(path)) and err.message == "nvmf_get_subsystems: timed out after 1s"


def test_spdk_trickling_target_is_cut_at_the_timeout(spdk_server):
    path, answers, _ = spdk_server

    def trickle(conn, req):  # a never-ending response, one byte at a time (5 s at most)
        conn.sendall(b'{"jsonrpc": "2.0", "result": [')
        for _ in range(100):
            time.sleep(0.05)
            try:
                conn.sendall(b" ")
            except OSError:
                return

    answers["nvmf_get_subsystems"] = trickle
    start = time.monotonic()
    r = spdk(path, timeout=0.5)
    assert time.monotonic() - start < 2
    (err,) = r.errors
    assert (err.device, err.message) == (str(path), "nvmf_get_subsystems: timed out after 0.5s")


def test_spdk_character_split_across_reads(spdk_server):
    path, answers, _ = spdk_server
    sub = SUBSYSTEMS[1] | {"model_number": "SPDK Überlauf"}

    def split_inside_the_u(conn, req):
        data = json.dumps({"jsonrpc": "2.0", "id": req["id"], "result": [sub]}, ensure_ascii=False).encode()
        cut = data.index("Ü".encode()) + 1
        conn.sendall(data[:cut])
        time.sleep(0.05)
        conn.sendall(data[cut:])

    answers["nvmf_get_subsystems"] = split_inside_the_u
    r = spdk(path)
    assert r.errors == [] and [d.model for d in r.devices] == ["SPDK Überlauf", "SPDK vhost-block"]


@pytest.mark.parametrize("answer, message", [
    (lambda conn, req: conn.sendall(b'{"jsonrpc": "2.0", "result": ["\xff"]}'), "response is not UTF-8 (byte 31)"),
    (lambda conn, req: conn.sendall(b'[1, 2]'), "not a JSON-RPC response: '[1, 2]'"),
    (lambda conn, req: conn.sendall(b'{"jsonrpc": "2.0", "error": "boom"}'), "boom (code None)"),
    (lambda conn, req: conn.sendall(b'{"jsonrpc": "2.0", "res'), "connection closed mid-response"),
    (5, "result is a int, not a list"),
], ids=["not utf-8", "not an object", "error not an object", "cut short", "result not a list"])
def test_spdk_bad_response_is_an_error_the_other_method_still_runs(spdk_server, answer, message):
    path, answers, seen = spdk_server
    answers["nvmf_get_subsystems"] = answer
    r = spdk(path)
    assert seen == ["nvmf_get_subsystems", "vhost_get_controllers"]
    assert [d.key for d in r.devices] == ["spdk:vhost:vhost.0"]
    (err,) = r.errors
    assert (err.driver, err.device) == ("spdk", str(path))
    assert err.message == f"nvmf_get_subsystems: {message}"


def test_spdk_odd_listen_addresses_are_a_malformed_entry(spdk_server):
    path, answers, _ = spdk_server
    answers["nvmf_get_subsystems"] = [SUBSYSTEMS[1] | {"nqn": "nqn.x:odd", "listen_addresses": ["tcp://10.0.0.5"]},
                                      SUBSYSTEMS[1]]
    r = spdk(path)
    assert [d.key for d in r.devices] == ["spdk:nqn.2016-06.io.spdk:cnode1", "spdk:vhost:vhost.0"]
    (err,) = r.errors
    assert err.message.startswith("nvmf_get_subsystems: malformed entry: AttributeError")


# ---- the example SPDK target (drivers/fixture_trees/spdk/rpc.json) --------------------------------


@pytest.fixture
def spdk_target():
    target = SpdkStandin().start()
    yield target
    target.stop()


def test_spdk_example_target(spdk_target):
    r = spdk(spdk_target.path)
    assert r.errors == [] and spdk_target.calls == ["nvmf_get_subsystems", "vhost_get_controllers"]
    assert [(d.key, d.type, d.controlpath_id.cpid_info) for d in r.devices] == [
        ("spdk:nqn.2016-06.io.spdk:cnode1", "NVME", {"nqn": "nqn.2016-06.io.spdk:cnode1",
                                                      "socket": str(spdk_target.path)}),
        ("spdk:vhost:vhost.0", "SSD", {"controller": "vhost.0", "socket": str(spdk_target.path)}),
        ("spdk:vhost:vhost.1", "SSD", {"controller": "vhost.1", "socket": str(spdk_target.path)})]
    assert [(d.resource_class, d.num_accelerators, d.traits) for d in r.deployables()] == [
        ("CUSTOM_SPDK_NVMF", 2, ["CUSTOM_SPDK", "CUSTOM_SPDK_NVMF_TCP"]),
        ("CUSTOM_SPDK_VHOST", 1, ["CUSTOM_SPDK", "CUSTOM_SPDK_VHOST_BLOCK"]),
        ("CUSTOM_SPDK_VHOST", 1, ["CUSTOM_SPDK", "CUSTOM_SPDK_VHOST_SCSI"])]
    scsi = r.deployables()[2].attach_handles[0]
    assert (scsi.attach_type, scsi.attach_info) == ("SPDK", {"controller": "vhost.1", "kind": "scsi",
                                                             "socket": "/var/tmp/vhost.1"})


def test_spdk_target_without_vhost(spdk_target):
    """A target built without vhost answers 'Method not found': no error, the subsystems reported."""
    del spdk_target.answers["vhost_get_controllers"]
    r = spdk(spdk_target.path)
    assert r.errors == [] and [d.key for d in r.devices] == ["spdk:nqn.2016-06.io.spdk:cnode1"]


def test_spdk_standin_as_a_process(tmp_path):
    """The stand-in runs as its own process too (`python tests/spdk_standin.py SOCKET ANSWERS`)."""
    import subprocess
    import sys
    import tempfile

    sock = Path(tempfile.mkdtemp(prefix="spdk", dir="/tmp")) / "spdk.sock"
    answers = FIXTURES / "spdk" / "rpc.json"
    proc = subprocess.Popen([sys.executable, str(Path(__file__).parents[1] / "spdk_standin.py"), str(sock),
                             str(answers)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("serving SPDK JSON-RPC")
        assert len(spdk(sock).devices) == 3
    finally:
        proc.kill()
        proc.wait()


# ---- prepare / unprepare: the bound instance on the target --------------------------------------

CNODE1 = "nqn.2016-06.io.spdk:cnode1"
INSTANCE = "6f1c3a52-0d2e-4c8b-9a57-3e1f00000001"
INSTANCE_NQN = f"nqn.2014-08.org.nvmexpress:uuid:{INSTANCE}"


def spdk_driver(path, timeout: float = 5.0):
    from rayborg.drivers.base import DriverContext
    from rayborg.drivers.spdk import SpdkDriver

    return SpdkDriver(DriverContext(hostname="n1", options={"socket": str(path), "timeout": timeout}))


def nvmf_handle(instance: str | None = INSTANCE, nqn: str = CNODE1):
    from rayborg.drivers.base import BoundHandle

    info = {"bdev": "Malloc0", "nqn": nqn, "nsid": "1", "traddr": "10.0.0.5", "trsvcid": "4420",
            "trtype": "TCP"}
    return BoundHandle("5f0c1a2b-0000-4000-8000-000000000001", "SPDK", info, instance)


def vhost_handle(controller: str = "vhost.0"):
    from rayborg.drivers.base import BoundHandle

    return BoundHandle("5f0c1a2b-0000-4000-8000-000000000002", "SPDK",
                       {"controller": controller, "kind": "block", "socket": "/var/tmp/vhost.0"}, INSTANCE)


def test_spdk_prepares_its_handles():
    from rayborg.actors.device_prep import prepares

    assert prepares("spdk")  # the binder goes to the host's agent for SPDK handles


def test_spdk_nvmf_prepare_allows_the_instance_and_unprepare_removes_it(spdk_target):
    drv = spdk_driver(spdk_target.path)
    drv.prepare(nvmf_handle())
    assert spdk_target.hosts(CNODE1) == [INSTANCE_NQN]
    assert ("nvmf_subsystem_add_host", {"nqn": CNODE1, "host": INSTANCE_NQN}) in spdk_target.params
    # a second instance on the other namespace of the same subsystem: both allowed, each removed alone
    other = "6f1c3a52-0d2e-4c8b-9a57-3e1f00000002"
    drv.prepare(nvmf_handle(other))
    assert sorted(spdk_target.hosts(CNODE1)) == [INSTANCE_NQN, f"nqn.2014-08.org.nvmexpress:uuid:{other}"]
    drv.unprepare(nvmf_handle())
    assert spdk_target.hosts(CNODE1) == [f"nqn.2014-08.org.nvmexpress:uuid:{other}"]
    # discovery does not see the hosts: a bind never makes the host's report "changed"
    assert spdk(spdk_target.path).devices == spdk(spdk_target.path).devices


def test_spdk_nvmf_prepare_and_unprepare_are_idempotent(spdk_target):
    """A resumed bind prepares again, a release may unprepare twice: SPDK refuses both ("Internal
    error"), the driver reads the subsystem back and finds it as wanted."""
    drv = spdk_driver(spdk_target.path)
    drv.prepare(nvmf_handle())
    drv.prepare(nvmf_handle())
    assert spdk_target.hosts(CNODE1) == [INSTANCE_NQN]
    assert spdk_target.calls[-2:] == ["nvmf_subsystem_add_host", "nvmf_get_subsystems"]  # refused, read back
    drv.unprepare(nvmf_handle())
    drv.unprepare(nvmf_handle())
    assert spdk_target.hosts(CNODE1) == []
    # the subsystem deleted on the target meanwhile: nothing left to remove
    drv.unprepare(nvmf_handle(nqn="nqn.2016-06.io.spdk:gone"))
    # an ARQ without instance was never granted anything
    drv.unprepare(nvmf_handle(None))


def test_spdk_nvmf_prepare_errors(spdk_target):
    from rayborg.drivers.base import DriverFailure
    from rayborg.drivers.spdk import SpdkRpcError

    drv = spdk_driver(spdk_target.path)
    with pytest.raises(DriverFailure, match="no subsystem nqn.2016-06.io.spdk:gone on the SPDK target"):
        drv.prepare(nvmf_handle(nqn="nqn.2016-06.io.spdk:gone"))
    with pytest.raises(DriverFailure, match="no host NQN for instance None"):
        drv.prepare(nvmf_handle(None))
    # the target refuses, and the host is not there: the refusal is the bind's reason
    spdk_target.answers["nvmf_subsystem_add_host"] = {"code": -32603, "message": "Internal error"}
    with pytest.raises(SpdkRpcError, match=r"nvmf_subsystem_add_host: Internal error \(code -32603\)") as exc:
        drv.prepare(nvmf_handle())
    assert str(spdk_target.path) in str(exc.value) and spdk_target.hosts(CNODE1) == []
    # unprepare refused while the host is still allowed: an error (the binder logs it)
    del spdk_target.answers["nvmf_subsystem_add_host"]
    drv.prepare(nvmf_handle())
    spdk_target.answers["nvmf_subsystem_remove_host"] = {"code": -32603,
                                                         "message": "Timeout reached during host removal"}
    with pytest.raises(SpdkRpcError, match="Timeout reached during host removal"):
        drv.unprepare(nvmf_handle())
    assert spdk_target.hosts(CNODE1) == [INSTANCE_NQN]


def test_spdk_prepare_without_target(tmp_path):
    from rayborg.drivers.spdk import SpdkRpcError

    with pytest.raises(SpdkRpcError, match="nvmf_subsystem_add_host: FileNotFoundError") as exc:
        spdk_driver(tmp_path / "none.sock").prepare(nvmf_handle())
    assert not exc.value.reached


def test_spdk_prepare_hung_target_times_out(spdk_server):
    from rayborg.drivers.spdk import SpdkRpcError

    path, answers, seen = spdk_server
    answers["nvmf_subsystem_add_host"] = lambda conn, req: conn.recv(1)  # reads, never answers
    with pytest.raises(SpdkRpcError, match="nvmf_subsystem_add_host: timed out after 0.5s"):
        spdk_driver(path, timeout=0.5).prepare(nvmf_handle())
    assert seen == ["nvmf_subsystem_add_host"]  # not reached: no read-back costing another timeout


def test_spdk_vhost_prepare_checks_the_controller(spdk_target):
    from rayborg.drivers.base import DriverFailure

    drv = spdk_driver(spdk_target.path)
    drv.prepare(vhost_handle())
    assert spdk_target.calls == ["vhost_get_controllers"]
    drv.unprepare(vhost_handle())  # the controller is the VM's as it is: nothing to undo, no call
    assert spdk_target.calls == ["vhost_get_controllers"]
    with pytest.raises(DriverFailure, match="vhost controller vhost.9 is not on the SPDK target"):
        drv.prepare(vhost_handle("vhost.9"))
    spdk_target.answers["vhost_get_controllers"] = {"code": -32603, "message": "Internal error"}
    with pytest.raises(DriverFailure, match="vhost_get_controllers: Internal error"):
        drv.prepare(vhost_handle())


def test_spdk_standin_hosts_as_spdk_answers(spdk_target):
    """The stand-in's stateful methods answer as SPDK's do (what the driver's read-back relies on)."""
    from rayborg.drivers.spdk import SpdkClient, SpdkRpcError

    client = SpdkClient(spdk_target.path)
    assert client.call("nvmf_subsystem_add_host", {"nqn": CNODE1, "host": INSTANCE_NQN}) is True
    add, remove = "nvmf_subsystem_add_host", "nvmf_subsystem_remove_host"
    for method, params, code in ((add, {"nqn": CNODE1, "host": INSTANCE_NQN}, -32603),  # twice
                                 (add, {"nqn": "nqn.x:none", "host": INSTANCE_NQN}, -32602),  # no subsystem
                                 (remove, {"nqn": CNODE1, "host": "nqn.x:other"}, -32603)):  # not there
        with pytest.raises(SpdkRpcError) as exc:
            client.call(method, params)
        assert exc.value.code == code
    subs = {s["nqn"]: s for s in client.call("nvmf_get_subsystems")}
    assert subs[CNODE1]["hosts"] == [{"nqn": INSTANCE_NQN}]
    assert client.call("nvmf_subsystem_remove_host", {"nqn": CNODE1, "host": INSTANCE_NQN}) is True
    assert spdk_target.hosts(CNODE1) == []


# ---- into the store (SQLite and PostgreSQL) ---------------------------------------------------


def _rows(session) -> dict[str, tuple]:
    out = {}
    for dep, dev in session.exec(select(Deployable, Device).join(Device, Device.id == Deployable.device_id)):
        cpid = session.exec(select(ControlPathID).where(ControlPathID.device_id == dev.id)).one()
        handles = session.exec(select(AttachHandle).where(AttachHandle.deployable_id == dep.id)).all()
        out[dep.name] = (dev.type, cpid.cpid_type, dep.num_accelerators,
                         sorted((h.attach_type, h.attach_info) for h in handles))
    return out


def test_pmem_report_stored(store, family_tree, builder):
    root = family_tree("pmem")
    report = discover_host("n1", root, drivers=["pmem"])
    diff = store.transact(apply_report, report)
    assert sorted(diff.added) == ["n1_region0_12GB", "n1_region0_6GB", "n1_region1_6GB"]
    rows = store.query(_rows)
    assert rows["n1_region0_6GB"][:3] == ("PMEM", "PMEM", 2)
    assert [(t, json.loads(i)["namespace"]) for t, i in rows["n1_region0_6GB"][3]] == [
        ("PMEM", "namespace0.0"), ("PMEM", "namespace0.1")]
    assert store.transact(apply_report, discover_host("n1", root, drivers=["pmem"])).empty  # same host: nothing
    # namespace0.1 reconfigured to fsdax (ndctl create-namespace -f -e namespace0.1 -m fsdax)
    builder.write(f"{R0}/namespace0.1/mode", "memory")
    diff = store.transact(apply_report, discover_host("n1", root, drivers=["pmem"]))
    assert diff.changed == ["n1_region0_6GB"] and not diff.added and not diff.removed
    assert [json.loads(i)["namespace"] for _, i in store.query(_rows)["n1_region0_6GB"][3]] == ["namespace0.0"]


def test_spdk_report_stored(store, spdk_target):
    diff = store.transact(apply_report, spdk(spdk_target.path))
    assert sorted(diff.added) == ["n1_nqn_2016-06_io_spdk_cnode1", "n1_vhost_vhost_0", "n1_vhost_vhost_1"]
    rows = store.query(_rows)
    assert rows["n1_vhost_vhost_0"] == ("SSD", "SPDK", 1, [("SPDK", json.dumps(
        {"controller": "vhost.0", "kind": "block", "socket": "/var/tmp/vhost.0"}, sort_keys=True))])
    nvmf = rows["n1_nqn_2016-06_io_spdk_cnode1"]
    assert nvmf[:3] == ("NVME", "SPDK", 2) and [json.loads(i)["bdev"] for _, i in nvmf[3]] == ["Malloc0", "Nvme0n1"]
    # the vhost.1 controller removed on the target: its device goes, its RP is tombstoned
    spdk_target.answers["vhost_get_controllers"] = example_answers()["vhost_get_controllers"][:1]
    diff = store.transact(apply_report, spdk(spdk_target.path))
    assert diff.removed == ["n1_vhost_vhost_1"] and diff.devices_removed == 1

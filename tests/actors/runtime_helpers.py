"""Start and stop the whole actor runtime (supervisor, PlacementSync, binders, HostAgents) for tests."""

from __future__ import annotations

import asyncio
import random
import re
import time
import uuid
from contextlib import asynccontextmanager

import ray

from waiting import wait_for  # noqa: F401  (re-exported: the actor tests import it from here)

from rayborg.actors.placement_client import PlacementClient
from rayborg.actors.runtime_config import NAMESPACE, RuntimeConfig
from rayborg.actors.supervisor import Supervisor
from rayborg.store.placement_state import provider_uuid


def make_compute_nodes(placement_url: str, hostnames) -> None:
    """A compute node RP named after each host, with nothing under it: device RPs an earlier test
    left there (the Placement server lives for the whole session) would be orphans to
    `placement_differences`."""
    client = PlacementClient(placement_url)
    providers = _all_providers(client)
    for name in hostnames:
        root = provider_uuid(name)
        if client.get_provider(root) is None:
            resp = client._request("POST", "/resource_providers", {"name": name, "uuid": root})
            assert resp.status_code == 200, resp.text
        leftovers = [p for p in providers if p["uuid"] != root and _of_host(p, name, root)]
        # Children before parents: Placement refuses to delete a provider that still has some.
        for rp in sorted(leftovers, key=lambda p: -_depth(p, providers)):
            allocations = client._request("GET", f"/resource_providers/{rp['uuid']}/allocations").json()
            for consumer in allocations.get("allocations", {}):
                client._request("DELETE", f"/allocations/{consumer}")
            client.delete_provider(rp["uuid"])


def _all_providers(client: PlacementClient) -> list[dict]:
    resp = client._request("GET", "/resource_providers")
    assert resp.status_code == 200, resp.text
    return resp.json()["resource_providers"]


def _of_host(rp: dict, hostname: str, root: str) -> bool:
    """In the host's compute node tree, or named like the host's devices wherever it hangs."""
    return rp["root_provider_uuid"] == root or rp["name"].startswith(f"{hostname}_")


def _depth(rp: dict, providers: list[dict]) -> int:
    parents = {p["uuid"]: p["parent_provider_uuid"] for p in providers}
    depth, parent = 0, rp["parent_provider_uuid"]
    while parent is not None:
        depth, parent = depth + 1, parents.get(parent)
    return depth


def kill_runtime() -> None:
    """Remove every rayborg actor (they are detached: they would outlive the test)."""
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["namespace"] == NAMESPACE:
            ray.kill(ray.get_actor(actor["name"], namespace=NAMESPACE), no_restart=True)
    wait_for(lambda: not [a for a in ray.util.list_named_actors(all_namespaces=True)
                          if a["namespace"] == NAMESPACE], timeout=30, what="actors to go")


def start_runtime(config: RuntimeConfig) -> Supervisor:
    sup = Supervisor(config)
    sup.start_singletons()
    sup.reconcile()
    return sup


NOVA = {"X-Project-Id": "p1", "X-User-Id": "u1", "X-Roles": "member", "X-Service-Roles": "service"}


async def until(predicate, what: str, timeout: float = 90.0, interval: float = 0.2):
    """`wait_for` in an async test: the first true value of `predicate()`, run in a thread so that
    the test's loop (and the app it serves) goes on meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := await asyncio.to_thread(predicate):
            return value
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def create_arq(client, profile: str = "fpga1") -> str:
    """One ARQ of `profile`, created over REST as Nova does."""
    resp = await client.post("/v2/accelerator_requests", json={"device_profile_name": profile}, headers=NOVA)
    assert resp.status == 201, await resp.text()
    return (await resp.json())["arqs"][0]["uuid"]


async def resolved(client, arq: str, *, leaving: str = "BindStarted", timeout: float = 60.0) -> dict:
    """The ARQ as the API shows it once it has left the state `leaving`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = await (await client.get(f"/v2/accelerator_requests/{arq}", headers=NOVA)).json()
        if body["state"] != leaving:
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"ARQ {arq} still {leaving}: {body}")


def allocations(placement: PlacementClient, consumer: str) -> dict[str, dict[str, int]]:
    """What `consumer` holds in Placement: RP uuid -> {resource class: amount}."""
    body = placement._request("GET", f"/allocations/{consumer}").json()
    return {rp: a["resources"] for rp, a in body["allocations"].items()}


FPGA_HOSTS = ("host-a", "host-b", "host-c")


@asynccontextmanager
async def fpga_rest_runtime(placement_server, nova, tmp_path, *, nudge_placement_sync: bool = False):
    """The runtime on the 3-host cluster, two fake FPGAs (2 accelerators each) per host, its 6 RPs in
    the real Placement, the profile `fpga1` (one FPGA), and the front door with the Ray binders as a
    test client (with `nudge_placement_sync`, also the PlacementSync handle `rayborg serve` gives it).
    Yields {"client", "store", "placement", "server"}; removes the actors and the store after."""
    from aiohttp.test_utils import TestClient, TestServer
    from factories import add_profile
    from sqlmodel import select

    from rayborg.actors.runtime_config import PLACEMENT_SYNC_NAME
    from rayborg.api.app import create_app
    from rayborg.api.app_keys import PLACEMENT_SYNC
    from rayborg.api.ray_binder import RayBinder
    from rayborg.settings import Settings
    from rayborg.store.tables import Deployable

    store = fresh_store(tmp_path)
    make_compute_nodes(placement_server.url, FPGA_HOSTS)
    seed = random.randrange(1, 4000)
    config = RuntimeConfig(
        database_url=store.url, placement_url=placement_server.url, nova_url=nova.url, report_interval=0.5,
        retry_interval=0.2, fake_devices="fpga:2x2",
        host_overrides={h: {"driver_options": {"fake": {"seed": seed + i * 7}}}
                        for i, h in enumerate(FPGA_HOSTS)})
    await asyncio.to_thread(start_runtime, config)
    placement = PlacementClient(placement_server.url)

    def synced() -> bool:
        rps = store.query(lambda s: [d.rp_uuid for d in s.exec(select(Deployable))])
        return len(rps) == 6 and all(placement.get_provider(rp) is not None for rp in rps)

    await until(synced, "6 device RPs in Placement")
    add_profile(store, "fpga1", [{"resources:FPGA": "1"}])
    app = create_app(Settings(database_url=store.url, _env_file=None), store,
                     RayBinder(store, config.binder_count))
    if nudge_placement_sync:
        app[PLACEMENT_SYNC] = ray.get_actor(PLACEMENT_SYNC_NAME, namespace=NAMESPACE)
    async with TestClient(TestServer(app)) as client:
        yield {"client": client, "store": store, "placement": placement, "server": placement_server}
    await asyncio.to_thread(kill_runtime)
    store.dispose()


def nested_fpga_card(tmp_path):
    """A host with the two-region Intel DFL card (`intel_fpga/dfl_regions.json`) under tmp_path/sys,
    and a stand-in fpgaconf that, like the real tool, loads an image (JSON with its `afu_id`) into the
    port of the PCI function it is pointed at, recording each call's arguments as a JSON line.
    Returns (sysfs root, {function: that port's afu_id file}, the tool, its record file)."""
    import stat
    import sys

    from rayborg.drivers.sysfs_tree import FIXTURE_TREES, build_tree

    root = build_tree(tmp_path / "sys", FIXTURE_TREES / "intel_fpga" / "dfl_regions.json")
    ports = {"1": root / "devices/pci0000:3b/0000:3b:00.1/fpga_region/region3/dfl-port.0/afu_id",
             "2": root / "devices/pci0000:3b/0000:3b:00.2/fpga_region/region4/dfl-port.1/afu_id"}
    record = tmp_path / "fpgaconf.calls"
    tool = tmp_path / "fpgaconf"
    port_files = {k: str(v) for k, v in ports.items()}
    tool.write_text(f"#!{sys.executable}\nimport json, pathlib, sys\n"
                    f"open({str(record)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
                    "image = json.loads(pathlib.Path(sys.argv[-1]).read_text())\n"
                    "fn = sys.argv[sys.argv.index('--function') + 1].removeprefix('0x')\n"
                    f"pathlib.Path({port_files!r}[fn]).write_text(image['afu_id'] + '\\n')\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    return root, ports, tool, record


def new_instance() -> str:
    return str(uuid.uuid4())


def fresh_store(tmp_path):
    from rayborg.store.engine import Store
    from rayborg.store.migrate import upgrade

    store = Store(f"sqlite:///{tmp_path / 'rayborg.db'}")
    upgrade(store.engine)
    return store


def arq_states(store) -> dict[str, str]:
    from sqlmodel import select

    from rayborg.store.tables import ExtARQ

    return store.query(lambda s: {a.uuid: a.state for a in s.exec(select(ExtARQ))})


def assert_handles_consistent(store) -> None:
    """No attach handle in use without an ARQ, none used by two ARQs, every Bound ARQ has one of
    the deployable it was bound to, and no ARQ left in BindStarted."""
    from sqlmodel import select

    from rayborg.store.tables import AttachHandle, Deployable, ExtARQ

    def check(session):
        arqs = list(session.exec(select(ExtARQ)))
        used = [h.id for h in session.exec(select(AttachHandle).where(AttachHandle.in_use == True))]  # noqa: E712
        claimed = [a.attach_handle_id for a in arqs if a.attach_handle_id is not None]
        assert len(claimed) == len(set(claimed)), "a handle is claimed by two ARQs"
        assert sorted(used) == sorted(claimed), "in-use handles and ARQ claims disagree"
        assert all(a.attach_handle_id for a in arqs if a.state == "Bound")
        assert not [a.uuid for a in arqs if a.state == "BindStarted"], "ARQs stuck in BindStarted"
        rp_of_handle = dict(session.exec(select(AttachHandle.id, Deployable.rp_uuid)
                                         .join(Deployable, Deployable.id == AttachHandle.deployable_id)).all())
        wrong = [a.uuid for a in arqs
                 if a.attach_handle_id and rp_of_handle[a.attach_handle_id] != a.device_rp_uuid]
        assert not wrong, f"ARQs holding a handle of another device than theirs: {wrong}"

    store.query(check)


def assert_recovered(store, placement: PlacementClient, nova=None, timeout: float = 90.0) -> dict[str, str]:
    """What any fault must leave behind once the killed actor is back: every ARQ Bound or
    BindFailed, handles consistent, store and Placement in agreement and, with `nova`, every ARQ's
    outcome delivered to Nova (at least once). Returns the ARQ states."""
    wait_for(lambda: "BindStarted" not in arq_states(store).values(), timeout=timeout,
             what="every bind to resolve")
    states = arq_states(store)
    assert set(states.values()) <= {"Bound", "BindFailed"}, states
    assert_handles_consistent(store)
    wait_store_matches_placement(store, placement, timeout=timeout)
    if nova is not None:
        instances = store.query(_instances)
        want = {(instances[u], u, "completed" if s == "Bound" else "failed") for u, s in states.items()}
        wait_for(lambda: want <= {(e["server_uuid"], e["tag"], e["status"]) for e in nova.delivered_events()},
                 timeout=timeout, what="Nova to hear of every ARQ")
    return states


def _instances(session) -> dict[str, str]:
    from sqlmodel import select

    from rayborg.store.tables import ExtARQ

    return dict(session.exec(select(ExtARQ.uuid, ExtARQ.instance_uuid)).all())


def _expected_trees(session) -> tuple[set[str], dict[str, dict], list[str]]:
    """From the store: its hosts, what each deployable's RP must look like in Placement (keyed by RP
    uuid, with `host` and `pushed`, the deployable's record of its last push, in the shape
    `_observed` gives), and what is still to be pushed (dirty deployables, tombstones). A root
    deployable's RP has `parent_uuid` None (its compute node's, filled in per host); a nested one's
    is its parent deployable's RP. Only leaves with accelerators hold inventory."""
    from sqlmodel import select

    from rayborg.store.tables import Attribute, Deployable, Device, DeviceStatus, Host, PlacementTombstone

    hosts = set(session.exec(select(Host.hostname)).all()) | set(session.exec(select(Device.hostname)).all())
    attrs: dict[int, dict[str, str]] = {}
    for a in session.exec(select(Attribute)):
        attrs.setdefault(a.deployable_id, {})[a.key] = a.value
    rows = list(session.exec(select(Deployable, Device).join(Device)))
    rp_of = {dep.id: dep.rp_uuid for dep, _ in rows}
    parents = {dep.parent_id for dep, _ in rows if dep.parent_id is not None}
    expected, pending = {}, []
    for dep, device in rows:
        mine = attrs.get(dep.id, {})
        traits = sorted({"OWNER_CYBORG", *(v for k, v in mine.items() if re.fullmatch(r"trait\d+", k))})
        state = {"uuid": dep.rp_uuid, "name": dep.name, "traits": traits,
                 "parent_uuid": rp_of.get(dep.parent_id) if dep.parent_id is not None else None}
        if dep.id in parents or not dep.num_accelerators:
            state["inventories"] = {}
        else:
            reserved = dep.num_accelerators if device.status == DeviceStatus.MAINTAINING.value else 0
            state |= {"resource_class": mine.get("rc"), "total": dep.num_accelerators, "reserved": reserved}
        expected[dep.rp_uuid] = {"host": device.hostname, "pushed": _recorded(dep.placement_state),
                                 "state": state}
        if dep.placement_dirty:
            pending.append(f"deployable {dep.name} not pushed yet")
    pending += [f"RP {t.rp_uuid} of {t.hostname} not deleted yet"
                for t in session.exec(select(PlacementTombstone))]
    return hosts, expected, pending


def _recorded(record: dict | None) -> dict | None:
    """A deployable's push record (`ProviderState.as_dict()`) in the shape of `_observed`: a state
    with no accelerators was pushed as no inventory at all."""
    if not record or record.get("total"):
        return record
    return {k: v for k, v in record.items() if k not in ("resource_class", "total", "reserved")} | {
        "inventories": {}}


def _observed(placement: PlacementClient, rp: dict) -> dict:
    """One device RP as Placement has it, in the shape of `ProviderState.as_dict()` (an RP without
    exactly one inventory shows `inventories` instead of its class, total and reserved)."""
    inventories = placement.get_inventories(rp["uuid"])[1]
    state = {"uuid": rp["uuid"], "name": rp["name"], "parent_uuid": rp["parent_provider_uuid"],
             "traits": sorted(placement.get_traits(rp["uuid"])[1])}
    if len(inventories) != 1:
        return state | {"inventories": inventories}
    ((rc, inv),) = inventories.items()
    return state | {"resource_class": rc, "total": inv["total"], "reserved": inv["reserved"]}


def placement_differences(store, placement: PlacementClient) -> list[str]:
    """Where Placement and the store's device tree disagree; empty when they agree.

    For every host of the store, its compute node's whole provider tree (and any RP named after the
    host outside it) must be exactly one RP per deployable of the host, named like the deployable:
    a root deployable's RP a child of the compute node, a nested one's (an FPGA's PR region) a child
    of its parent deployable's RP. A leaf has one inventory of its resource class (total = its
    accelerators, reserved = total while its device is in maintenance); a deployable with children
    (or no accelerators) has no inventory at all. Each has its traits (OWNER_CYBORG and its
    `trait<N>` attributes). The deployable's own record of its last push must say the same: a
    restarted PlacementSync diffs against it, so a stale record would hide a later change."""
    hosts, expected, pending = store.query(_expected_trees)
    if pending:  # still converging: no need to ask Placement
        return pending
    providers = _all_providers(placement)
    diffs = []
    for host in sorted(hosts):
        root = placement.find_provider_by_name(host)
        want = {rp: e for rp, e in expected.items() if e["host"] == host}
        if root is None:
            diffs += [f"{host}: no compute node in Placement for {len(want)} deployables"] if want else []
            continue
        have = {p["uuid"]: p for p in providers if p["uuid"] != root and _of_host(p, host, root)}
        diffs += [f"{host}: orphan RP {have[rp]['name']} ({rp})" for rp in sorted(set(have) - set(want))]
        diffs += [f"{host}: RP {want[rp]['state']['name']} missing" for rp in sorted(set(want) - set(have))]
        for rp in sorted(set(want) & set(have)):
            observed = _observed(placement, have[rp])
            state = want[rp]["state"]
            state = state | {"parent_uuid": root} if state["parent_uuid"] is None else state
            if observed != state:
                diffs.append(f"{host}: RP {observed['name']} is {observed}, store says {state}")
            if want[rp]["pushed"] != observed:
                diffs.append(f"{host}: RP {observed['name']} recorded as {want[rp]['pushed']}, is {observed}")
    return diffs


def store_matches_placement(store, placement: PlacementClient) -> bool:
    return not placement_differences(store, placement)


def wait_store_matches_placement(store, placement: PlacementClient, timeout: float = 120.0) -> None:
    """Wait for `placement_differences` to be empty; on timeout, say what still differs."""
    last: list[str] = []

    def agree() -> bool:
        last[:] = placement_differences(store, placement)
        return not last

    try:
        wait_for(agree, timeout=timeout, interval=0.5, what="store and Placement to agree")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; still differing: {last[:8]}") from None

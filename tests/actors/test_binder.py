"""actors/binder.py without Ray: the Binder actor's class runs in this event loop on a real store
(SQLite and PostgreSQL), with fakes only for what it calls outside the store (the hosts' HostAgent
handles, Nova, Placement). A batch of started binds is finished in one transaction, Bound with a
handle claimed and the Nova event delivered; the slow path prepares the device on its host (or fails
the bind with the reason); a standalone bind's allocation goes through the outbox into Placement
(or fails the bind when Placement refuses it); a release unprepares the device and gives the
allocation back; binds left in BindStarted are resumed at start and re-driven later, only by the
binder that owns their instance; binder 0's claim reaper releases the claims of ended jobs."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
from factories import add_device, add_profile
from sqlmodel import select

from rayborg.actors import binder as binder_module
from rayborg.actors import claim_reaper
from rayborg.actors.binder import PLACEMENT_REFUSED, Binder, binder_index
from rayborg.actors.placement_client import PlacementClient, PlacementUnavailable
from rayborg.actors.runtime_config import RuntimeConfig
from rayborg.store import arq_state, bind_plan, claims, hosts, nova_events
from rayborg.store.arq_state import BindTarget
from rayborg.store.queries import operator
from rayborg.store.tables import AttachHandle, ExtARQ, StandaloneAllocation

RETRY = 0.05


# -- fakes of what the binder calls outside the store --------------------------------------------
class FakeAgent:
    """A HostAgent handle: `prepare`/`unprepare`/`program` record their calls and answer `answers`."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.answers: dict[str, dict] = {}
        self.gate: asyncio.Event | None = None  # prepare waits for it when set

    def __getattr__(self, method: str):
        agent = self

        class Method:
            @staticmethod
            async def remote(*args):
                agent.calls.append((method, *args))
                if method == "prepare" and agent.gate is not None:
                    await agent.gate.wait()
                return agent.answers.get(method, {"ok": True, "error": None})

        return Method


class FakeNova:
    def __init__(self):
        self.events: list = []
        self.down = False

    def send_bound_events(self, events):
        if self.down:
            from rayborg.actors.nova_client import NovaError

            raise NovaError("Nova unreachable")
        self.events.extend(events)
        return set()


class Resp:
    def __init__(self, status: int, body: dict | None = None):
        self.status_code = status
        self._body = body or {}
        self.text = json.dumps(self._body)

    def json(self):
        return self._body


class FakePlacement:
    """The allocations endpoints of Placement, as `standalone_placement.push` uses them."""

    _error = staticmethod(PlacementClient._error)

    def __init__(self):
        self.allocations: dict[str, dict[str, dict[str, int]]] = {}
        self.generations: dict[str, int] = {}
        self.refuse: str | None = None
        self.calls: list[tuple[str, str]] = []

    def _request(self, method: str, path: str, body: dict | None = None):
        consumer = path.rsplit("/", 1)[1]
        self.calls.append((method, consumer))
        if method == "GET":
            return Resp(200, {"allocations": {rp: {"resources": r} for rp, r in self.allocations.get(consumer, {}).items()},
                              "consumer_generation": self.generations.get(consumer)})
        if method == "PUT":
            if self.refuse:
                return Resp(409, {"errors": [{"code": "placement.undefined_code", "detail": self.refuse}]})
            self.allocations[consumer] = {rp: dict(a["resources"]) for rp, a in body["allocations"].items()}
            self.generations[consumer] = self.generations.get(consumer, 0) + 1
            return Resp(204)
        assert method == "DELETE"
        self.allocations.pop(consumer, None)
        self.generations.pop(consumer, None)
        return Resp(204)


# -- the binder in this loop ----------------------------------------------------------------------
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # no SQL of its own


@pytest.fixture
async def make_binder(database_url, store, monkeypatch):
    """Build Binder instances (the actor's class, not an actor) with the given fakes."""
    made = []
    monkeypatch.setattr(claim_reaper, "dead_jobs", lambda: None)  # no job table: the reaper keeps all

    async def make(index: int = 0, count: int = 1, nova=None, placement=None, agents=None,
                   redrive: float = 60.0):
        monkeypatch.setattr(binder_module, "nova_client", lambda config: nova)
        monkeypatch.setattr(binder_module, "placement_client", lambda config: placement)
        cls = Binder.__ray_metadata__.modified_class
        b = object.__new__(cls)
        agents = agents if agents is not None else {}

        def agent(hostname):
            if hostname not in agents:
                raise ValueError(f"no actor rayborg:host:{hostname}")
            return agents[hostname]

        b._agent = agent  # instead of ray.get_actor(host_agent_name(hostname))
        await cls.__init__(b, RuntimeConfig(database_url=database_url, binder_count=count, retry_interval=RETRY,
                                            redrive_interval=redrive), index)
        made.append(b)
        await b._tasks[-1]  # its resume of what was left in BindStarted (before the test starts binds)
        return b

    yield make
    for b in made:
        for task in b._tasks:
            task.cancel()
        await asyncio.gather(*b._tasks, return_exceptions=True)
        b.store.dispose()


async def until(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(predicate):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")


def started(store, rp_uuid: str | None, instance: str | None = None, hostname: str | None = "host1",
            profile: str = "dp") -> tuple[str, str]:
    """One ARQ moved to BindStarted as the front door's PATCH does (rp None: a standalone bind)."""
    arq = store.transact(arq_state.create_arqs, profile, "p1")[0].uuid
    instance = instance or str(uuid.uuid4())
    target = BindTarget(None if rp_uuid is None else hostname, rp_uuid, instance, "p1")
    store.transact(arq_state.start_bind, {arq: target})
    return arq, instance


def row(store, arq: str) -> ExtARQ:
    return store.query(lambda s: s.exec(select(ExtARQ).where(ExtARQ.uuid == arq)).one())


def handles_in_use(store) -> dict[int, bool]:
    return store.query(lambda s: {h.id: h.in_use for h in s.exec(select(AttachHandle))})


def outbox(store) -> dict[str, tuple[bool, dict]]:
    return store.query(lambda s: {r.consumer: (r.dirty, dict(r.pushed)) for r in s.exec(select(StandaloneAllocation))})


# -- batching and Nova ------------------------------------------------------------------------------
async def test_started_binds_are_finished_in_one_batch_bound_with_handles_claimed_and_nova_told(
        store, make_binder, monkeypatch):
    add_profile(store, "dp", [{"resources:FPGA": "1"}])
    tree = add_device(store, handles_per_deployable=3)
    batches = []
    real = bind_plan.finish_quick

    def counted(session, uuids, slow):
        batches.append(sorted(uuids))
        return real(session, uuids, slow)

    monkeypatch.setattr(bind_plan, "finish_quick", counted)
    nova = FakeNova()
    agent = FakeAgent()
    b = await make_binder(nova=nova, agents={"host1": agent})
    arqs = [started(store, tree.rp_uuids[0]) for _ in range(3)]
    outcomes = await asyncio.gather(*(b.bind([arq]) for arq, _ in arqs))
    assert outcomes == [{arq: "Bound"} for arq, _ in arqs]
    assert batches == [sorted(a for a, _ in arqs)]  # three callers, one transaction
    assert agent.calls == []  # intel_fpga prepares nothing: no round trip to the host
    rows = [row(store, a) for a, _ in arqs]
    assert all(r.state == "Bound" for r in rows)
    assert sorted(r.attach_handle_id for r in rows) == sorted(tree.handle_ids)
    assert all(handles_in_use(store).values())
    assert b.binds_done == 3 and b.binds_failed == 0 and not b._active
    await until(lambda: len(nova.events) == 3)
    assert {(e.instance_uuid, e.arq_uuid, e.arq_state) for e in nova.events} == {(i, a, "Bound") for a, i in arqs}
    assert store.query(nova_events.pending_count) == 0
    assert await b.bind([arqs[0][0]]) == {arqs[0][0]: "Bound"}  # a repeated call changes nothing
    assert b.binds_done == 4 and len(nova.events) == 3


@SQLITE_ONLY
async def test_nova_down_keeps_the_event_owed_until_nova_takes_it(store, make_binder):
    add_profile(store, "dp", [{"resources:FPGA": "1"}])
    tree = add_device(store)
    nova = FakeNova()
    nova.down = True
    b = await make_binder(nova=nova)
    arq, instance = started(store, tree.rp_uuids[0])
    assert await b.bind([arq]) == {arq: "Bound"}
    await asyncio.sleep(5 * RETRY)
    assert store.query(nova_events.pending_count) == 1 and nova.events == []
    nova.down = False
    await until(lambda: store.query(nova_events.pending_count) == 0)
    assert [(e.instance_uuid, e.arq_state) for e in nova.events] == [(instance, "Bound")]


@SQLITE_ONLY
async def test_without_nova_the_event_stays_queued(store, make_binder):
    add_profile(store, "dp", [{"resources:FPGA": "1"}])
    tree = add_device(store)
    b = await make_binder(nova=None)
    arq, instance = started(store, tree.rp_uuids[0])
    assert await b.bind([arq]) == {arq: "Bound"} and b.notifier is None
    assert store.query(nova_events.pending) == {instance: [(arq, "Bound")]}


async def test_a_bind_that_cannot_be_done_fails_with_the_reason(store, make_binder):
    add_profile(store, "dp", [{"resources:FPGA": "1"}])
    tree = add_device(store)
    nova = FakeNova()
    b = await make_binder(nova=nova)
    store.transact(hosts.mark_lost, "host1")
    arq, instance = started(store, tree.rp_uuids[0])
    assert await b.bind([arq]) == {arq: "BindFailed"}
    r = row(store, arq)
    assert r.bind_error == "host host1 has left the cluster" and r.attach_handle_id is None
    assert not any(handles_in_use(store).values()) and b.binds_failed == 1
    await until(lambda: len(nova.events) == 1)
    assert (nova.events[0].instance_uuid, nova.events[0].arq_state) == (instance, "BindFailed")


async def test_a_device_disabled_while_its_bind_waited_is_refused_with_the_reason(store, make_binder):
    add_profile(store, "dp", [{"resources:VGPU": "1"}])
    tree = add_device(store, type="GPU", rc="VGPU", traits=(), driver_name="nvidia_vgpu", handles_per_deployable=1)
    agent = FakeAgent()
    b = await make_binder(agents={"host1": agent})
    arq, _ = started(store, tree.rp_uuids[0])
    store.transact(operator.set_device_status, tree.device_uuid, False, "firmware update")
    assert await b.bind([arq]) == {arq: "BindFailed"}
    assert row(store, arq).bind_error == f"Device {tree.device_uuid} is disabled (firmware update)"
    assert agent.calls == [] and handles_in_use(store) == {tree.handle_ids[0]: False}  # nothing prepared on it


@SQLITE_ONLY
async def test_an_unknown_arq_is_missing(store, make_binder):
    b = await make_binder()
    ghost = str(uuid.uuid4())
    assert await b.bind([ghost]) == {ghost: "missing"}


# -- the slow path: device preparation on the host ---------------------------------------------------
async def test_a_preparing_driver_gets_the_held_handle_before_the_bind_is_bound(store, make_binder):
    add_profile(store, "dp", [{"resources:VGPU": "1"}])
    tree = add_device(store, type="GPU", rc="VGPU", traits=(), driver_name="nvidia_vgpu", attach_type="MDEV",
                      handles_per_deployable=1)
    agent = FakeAgent()
    agent.gate = asyncio.Event()
    nova = FakeNova()
    b = await make_binder(nova=nova, agents={"host1": agent})
    arq, instance = started(store, tree.rp_uuids[0])
    first = asyncio.ensure_future(b.bind([arq]))
    await until(lambda: len(agent.calls) == 1)
    # the handle is held while the driver works, the ARQ still BindStarted: Nova hears nothing yet
    r = row(store, arq)
    assert r.state == "BindStarted" and r.attach_handle_id == tree.handle_ids[0]
    second = asyncio.ensure_future(b.bind([arq]))  # e.g. Ray's retry of the call: waits for the same bind
    await asyncio.sleep(0.05)
    agent.gate.set()
    assert await first == {arq: "Bound"} and await second == {arq: "Bound"}
    (method, driver, handle), = agent.calls  # prepared once
    held = store.query(lambda s: s.exec(select(AttachHandle).where(AttachHandle.id == tree.handle_ids[0])).one())
    assert (method, driver, handle.uuid, handle.attach_type) == ("prepare", "nvidia_vgpu", held.uuid, "MDEV")
    assert handle.attach_info == json.loads(held.attach_info)
    assert row(store, arq).state == "Bound"
    await until(lambda: len(nova.events) == 1)
    assert nova.events[0].arq_state == "Bound"


async def test_a_failed_preparation_fails_the_bind_and_frees_the_handle(store, make_binder):
    add_profile(store, "dp", [{"resources:VGPU": "1"}])
    tree = add_device(store, type="GPU", rc="VGPU", traits=(), driver_name="nvidia_vgpu", attach_type="MDEV",
                      handles_per_deployable=1)
    agent = FakeAgent()
    agent.answers["prepare"] = {"ok": False, "error": "mdev type nvidia-35 has no instance left"}
    nova = FakeNova()
    b = await make_binder(nova=nova, agents={"host1": agent})
    arq, instance = started(store, tree.rp_uuids[0])
    assert await b.bind([arq]) == {arq: "BindFailed"}
    r = row(store, arq)
    assert r.bind_error == "device preparation failed: mdev type nvidia-35 has no instance left"
    assert r.attach_handle_id is None and handles_in_use(store) == {tree.handle_ids[0]: False}
    assert b.binds_failed == 1 and b.binds_done == 0
    await until(lambda: len(nova.events) == 1)
    assert (nova.events[0].instance_uuid, nova.events[0].arq_state) == (instance, "BindFailed")


@SQLITE_ONLY
async def test_a_host_without_agent_fails_a_bind_that_needs_it(store, make_binder):
    add_profile(store, "dp", [{"resources:VGPU": "1"}])
    tree = add_device(store, type="GPU", rc="VGPU", traits=(), driver_name="nvidia_vgpu", handles_per_deployable=1)
    b = await make_binder(agents={})
    arq, _ = started(store, tree.rp_uuids[0])
    assert await b.bind([arq]) == {arq: "BindFailed"}
    assert row(store, arq).bind_error == "device preparation failed: host host1 has no agent"
    assert handles_in_use(store) == {tree.handle_ids[0]: False}


async def test_a_bitstream_is_programmed_before_the_bind_and_recorded(store, make_binder):
    add_profile(store, "dp", [{"resources:FPGA": "1", "accel:bitstream_id": "bs-1"}])
    tree = add_device(store)
    agent = FakeAgent()
    agent.answers["program"] = {"ok": True, "error": None}
    b = await make_binder(agents={"host1": agent})
    arq, _ = started(store, tree.rp_uuids[0])
    assert await b.bind([arq]) == {arq: "Bound"}
    assert agent.calls == [("program", "intel_fpga", "host1_PAC_Arria10_5e_0", "bs-1")]
    assert store.query(bind_plan.load_many, [arq])[arq].bitstream_id is None  # now loaded: nothing to program
    agent.answers["program"] = {"ok": False, "error": "flash write failed"}
    add_profile(store, "dp2", [{"resources:FPGA": "1", "accel:bitstream_id": "bs-2"}])
    arq2, _ = started(store, tree.rp_uuids[0], profile="dp2")
    assert await b.bind([arq2]) == {arq2: "BindFailed"}
    assert row(store, arq2).bind_error == "programming failed: flash write failed"


# -- standalone binds: the allocation through the outbox ---------------------------------------------
async def test_a_standalone_bind_allocates_its_device_in_placement_through_the_outbox(store, make_binder):
    add_profile(store, "dp", [{"resources:FPGA": "1"}])
    tree = add_device(store)
    placement = FakePlacement()
    b = await make_binder(placement=placement)
    arq, consumer = started(store, None)
    assert outbox(store) == {consumer: (True, {})}  # marked by the PATCH's transaction
    assert await b.bind([arq]) == {arq: "Bound"}
    assert placement.allocations == {consumer: {tree.rp_uuids[0]: {"FPGA": 1}}}
    assert outbox(store) == {consumer: (False, {tree.rp_uuids[0]: {"FPGA": 1}})}
    assert row(store, arq).attach_handle_id in tree.handle_ids
    assert b.allocations.pushed == 1


async def test_placement_refusing_the_allocation_fails_the_standalone_bind(store, make_binder):
    add_profile(store, "dp", [{"resources:FPGA": "1"}])
    add_device(store)
    placement = FakePlacement()
    placement.refuse = "Unable to allocate inventory: capacity exceeded"
    b = await make_binder(placement=placement)
    arq, consumer = started(store, None)
    assert await b.bind([arq]) == {arq: "BindFailed"}
    r = row(store, arq)
    assert r.bind_error.startswith(PLACEMENT_REFUSED) and "capacity exceeded" in r.bind_error
    assert r.attach_handle_id is None and not any(handles_in_use(store).values())
    assert placement.allocations == {}
    placement.refuse = None  # the allocation step gives back what the failed bind no longer holds
    await until(lambda: outbox(store) == {})
    assert placement.allocations == {}


@SQLITE_ONLY
async def test_without_placement_a_standalone_bind_takes_the_quick_path(store, make_binder):
    add_profile(store, "dp", [{"resources:FPGA": "1"}])
    add_device(store)
    b = await make_binder(placement=None)
    arq, consumer = started(store, None)
    assert await b.bind([arq]) == {arq: "Bound"} and b.allocations is None
    assert outbox(store) == {consumer: (True, {})}  # nothing to push it to


# -- releases ----------------------------------------------------------------------------------------
async def test_an_unbind_unprepares_the_device_and_gives_the_allocation_back(store, make_binder):
    add_profile(store, "dp", [{"resources:VGPU": "1"}])
    tree = add_device(store, type="GPU", rc="VGPU", traits=(), driver_name="nvidia_vgpu", attach_type="MDEV",
                      handles_per_deployable=1)
    agent = FakeAgent()
    placement = FakePlacement()
    b = await make_binder(placement=placement, agents={"host1": agent})
    arq, consumer = started(store, None)
    assert await b.bind([arq]) == {arq: "Bound"}
    assert placement.allocations == {consumer: {tree.rp_uuids[0]: {"VGPU": 1}}}
    held = store.transact(bind_plan.unbind_releasing, [arq], None)  # the front door's unbind
    assert held.consumers == [consumer] and [h.arq_uuid for h in held.handles] == [arq]
    await b.released(held.handles, held.consumers)
    assert [c[0] for c in agent.calls] == ["prepare", "unprepare"]
    assert agent.calls[1][2].uuid == agent.calls[0][2].uuid  # the handle it prepared
    assert handles_in_use(store) == {tree.handle_ids[0]: False} and row(store, arq).state == "Unbound"
    assert placement.allocations == {} and outbox(store) == {}


async def test_a_release_whose_push_fails_is_left_to_the_allocation_step(store, make_binder):
    add_profile(store, "dp", [{"resources:FPGA": "1"}])
    add_device(store)
    placement = FakePlacement()
    b = await make_binder(placement=placement)
    arq, consumer = started(store, None)
    assert await b.bind([arq]) == {arq: "Bound"}
    held = store.transact(bind_plan.unbind_releasing, [arq], None)
    real = placement._request

    def down(*args, **kwargs):
        raise PlacementUnavailable("Placement unreachable: connection refused")

    placement._request = down
    await b.released(held.handles, held.consumers)  # does not raise: the outbox keeps it dirty
    assert outbox(store)[consumer][0] is True and placement.allocations
    placement._request = real  # back: the allocation step pushes it
    await until(lambda: outbox(store) == {})
    assert placement.allocations == {}


# -- after a restart, and binds nobody works on -------------------------------------------------------
def instances_of(count: int, index: int, n: int) -> list[str]:
    """n instance uuids that binder `index` of `count` owns."""
    out = []
    while len(out) < n:
        candidate = str(uuid.uuid4())
        if binder_index(candidate, count) == index:
            out.append(candidate)
    return out


async def test_a_restarted_binder_resumes_only_the_binds_it_owns(store, make_binder):
    add_profile(store, "dp", [{"resources:FPGA": "1"}])
    tree = add_device(store, handles_per_deployable=4)
    mine = [started(store, tree.rp_uuids[0], i)[0] for i in instances_of(2, 1, 2)]
    theirs = [started(store, tree.rp_uuids[0], i)[0] for i in instances_of(2, 0, 2)]
    b = await make_binder(index=1, count=2)  # its predecessor died with these in BindStarted
    assert [row(store, a).state for a in mine] == ["Bound", "Bound"]
    assert [row(store, a).state for a in theirs] == ["BindStarted", "BindStarted"]
    assert b.redriven == 0 and b.binds_done == 2


async def test_binds_idle_in_bind_started_are_redriven(store, make_binder):
    add_profile(store, "dp", [{"resources:FPGA": "1"}])
    tree = add_device(store, handles_per_deployable=2)
    b = await make_binder(index=0, count=2, redrive=0.3)
    # submitted by a front door whose call never reached this binder (or whose batch failed)
    arq, _ = started(store, tree.rp_uuids[0], instances_of(2, 0, 1)[0])
    other, _ = started(store, tree.rp_uuids[0], instances_of(2, 1, 1)[0])
    await until(lambda: row(store, arq).state == "Bound")
    assert b.redriven == 1
    await asyncio.sleep(0.5)  # the other binder's: never re-driven here
    assert row(store, other).state == "BindStarted" and b.redriven == 1


async def test_a_batch_that_fails_on_the_store_leaves_the_binds_for_the_redrive(store, make_binder, monkeypatch):
    add_profile(store, "dp", [{"resources:FPGA": "1"}])
    tree = add_device(store)
    b = await make_binder(redrive=0.3)
    real = bind_plan.finish_quick
    failures = []

    def once(session, uuids, slow):
        if not failures:
            failures.append(uuids)
            raise RuntimeError("database went away")
        return real(session, uuids, slow)

    monkeypatch.setattr(bind_plan, "finish_quick", once)
    arq, _ = started(store, tree.rp_uuids[0])
    with pytest.raises(RuntimeError, match="database went away"):
        await b.bind([arq])
    assert row(store, arq).state == "BindStarted" and not b._active
    await until(lambda: row(store, arq).state == "Bound")
    assert b.redriven == 1 and failures == [[arq]]


# -- claims and binder 0's reaper ------------------------------------------------------------------
async def test_a_claim_is_bound_and_the_reaper_releases_it_when_its_job_ended(store, make_binder, monkeypatch):
    add_profile(store, "dp", [{"resources:FPGA": "1"}])
    tree = add_device(store, handles_per_deployable=2)
    placement = FakePlacement()
    b = await make_binder(placement=placement)
    ended, running = claims.consumer_uuid("0000000a"), claims.consumer_uuid("0000000b")
    for consumer in (ended, running):
        got = await b.claim("dp", consumer)
        assert [d["state"] for d in got["devices"]] == ["Bound"] and got["placement"] is True
    assert set(placement.allocations) == {ended, running}
    assert store.query(nova_events.pending_count) == 0  # no Nova behind a claim
    assert b.reaper is not None
    monkeypatch.setattr(claim_reaper, "dead_jobs", lambda: {"0000000a"})
    assert await b.reaper.step() and b.reaper.reaped == 1
    assert set(store.query(claims.listing)) == {running}
    assert placement.allocations == {running: {tree.rp_uuids[0]: {"FPGA": 1}}}
    assert sum(handles_in_use(store).values()) == 1
    b1 = await make_binder(index=1, count=2)
    assert b1.reaper is None  # only binder 0 reaps

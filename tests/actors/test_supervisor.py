"""actors/supervisor.py without Ray: the Supervisor's reconcile step against a fake Ray state (the
node list, the actor classes it starts, the PlacementSync handle it looks up; replaced on the `ray`
module and the actor modules, since the class takes none of them as arguments) and a real store
(SQLite and PostgreSQL) for the hosts it remembers. One HostAgent per alive host, pinned by label or
to its node; a host whose node left is marked lost once (also one the store still had up from
before this daemon started), and gets its agent back, with a forced sweep, when it returns; the
singletons are started once each, on the head when the store is SQLite; a failing reconcile does
not stop the loop."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from rayborg.actors import binder as binder_module
from rayborg.actors import host_agent as host_agent_module
from rayborg.actors import placement_sync as placement_sync_module
from rayborg.actors import supervisor as supervisor_module
from rayborg.actors.runtime_config import (HOST_LABEL, NAMESPACE, PLACEMENT_SYNC_NAME, RuntimeConfig,
                                           binder_name, host_agent_name)
from rayborg.actors.supervisor import Supervisor, node_hostname
from rayborg.store import hosts


def nid(name: str) -> str:
    """A Ray node id (56 hex digits) made from a readable name."""
    return hashlib.sha256(name.encode()).hexdigest()[:56]


def node(name: str, hostname: str, label: str | None = None, alive: bool = True, head: bool = False) -> dict:
    """One entry of `ray.nodes()`."""
    resources = {"CPU": 2.0, **({"node:__internal_head__": 1.0} if head else {})}
    return {"NodeID": nid(name), "Alive": alive, "NodeManagerHostname": hostname,
            "Labels": {HOST_LABEL: label} if label else {}, "Resources": resources}


class Method:
    def __init__(self, name: str, calls: list, effect=None):
        self.name, self.calls, self.effect = name, calls, effect

    def remote(self, *args):
        self.calls.append((self.name, *args))
        return self.effect(*args) if self.effect else f"ref:{self.name}"


class Handle:
    """An actor handle: every method call is recorded."""

    def __init__(self, options: dict, args: tuple, effects: dict | None = None):
        self.options, self.args, self.calls = options, args, []
        self._effects = effects or {}

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return Method(name, self.calls, self._effects.get(name))


class ActorClass:
    """`SomeActor.options(...).remote(...)`, recording each actor created."""

    def __init__(self):
        self.created: list[Handle] = []

    def options(self, **options):
        outer = self

        class Bound:
            @staticmethod
            def remote(*args):
                handle = Handle(options, args)
                outer.created.append(handle)
                return handle

        return Bound


class FakeRay:
    """What the supervisor asks Ray: the node list, and the PlacementSync actor by name. Its
    `host_lost` marks the host lost in the store, as PlacementSync.host_lost does."""

    def __init__(self, store):
        self.nodes: list[dict] = []
        self.sync = Handle({}, (), {"host_lost": lambda hostname: store.transact(hosts.mark_lost, hostname)})
        self.looked_up: list[tuple] = []

    def get_actor(self, name, namespace=None):
        self.looked_up.append((name, namespace))
        if name != PLACEMENT_SYNC_NAME:
            raise ValueError(name)
        return self.sync


@pytest.fixture
def fake_ray(store, monkeypatch):
    ray = FakeRay(store)
    monkeypatch.setattr(supervisor_module.ray, "nodes", lambda: ray.nodes)
    monkeypatch.setattr(supervisor_module.ray, "get_actor", ray.get_actor)
    ray.agents = ActorClass()
    monkeypatch.setattr(host_agent_module, "HostAgent", ray.agents)
    return ray


def lost_calls(fake_ray) -> list[str]:
    return [c[1] for c in fake_ray.sync.calls if c[0] == "host_lost"]


def test_a_node_is_named_by_its_label_else_by_its_machine():
    assert node_hostname(node("n1", "machine-1", label="host-a")) == "host-a"
    assert node_hostname(node("n2", "machine-2")) == "machine-2"
    assert node_hostname({"NodeManagerHostname": "machine-3", "Labels": None}) == "machine-3"


def test_one_agent_per_alive_host_pinned_by_label_or_to_its_node(database_url, store, fake_ray):
    fake_ray.nodes = [node("n-a1", "m1", label="host-a", head=True), node("n-a2", "m2", label="host-a"),
                      node("n-c", "machine-c"), node("n-dead", "m4", label="host-d", alive=False)]
    config = RuntimeConfig(database_url=database_url)
    sup = Supervisor(config)
    sup.reconcile()
    by_host = {h.args[0]: h for h in fake_ray.agents.created}
    assert sorted(by_host) == ["host-a", "machine-c"] and len(fake_ray.agents.created) == 2
    assert set(sup.agents) == {"host-a", "machine-c"}
    for hostname, handle in by_host.items():
        assert handle.args == (hostname, config)
        assert {k: handle.options[k] for k in ("name", "namespace", "lifetime", "get_if_exists")} == {
            "name": host_agent_name(hostname), "namespace": NAMESPACE, "lifetime": "detached", "get_if_exists": True}
    assert by_host["host-a"].options["label_selector"] == {HOST_LABEL: "host-a"}
    pinned = by_host["machine-c"].options["scheduling_strategy"]
    assert isinstance(pinned, NodeAffinitySchedulingStrategy)
    assert (pinned.node_id, pinned.soft) == (nid("n-c"), False)
    sup.reconcile()
    assert len(fake_ray.agents.created) == 2  # nothing new: nothing started again
    assert lost_calls(fake_ray) == [] and sup.lost == set()


def test_a_host_whose_node_leaves_is_lost_once_and_comes_back_with_a_sweep(database_url, store, fake_ray):
    fake_ray.nodes = [node("n-a", "m1", label="host-a", head=True), node("n-b", "m2", label="host-b")]
    for hostname in ("host-a", "host-b"):  # both reported
        store.transact(hosts.upsert_host, hostname)
    sup = Supervisor(RuntimeConfig(database_url=database_url))
    sup.reconcile()
    assert sorted(store.query(hosts.hostnames_up)) == ["host-a", "host-b"]
    fake_ray.nodes = [fake_ray.nodes[0], node("n-b", "m2", label="host-b", alive=False)]
    sup.reconcile()
    assert lost_calls(fake_ray) == ["host-b"] and sup.lost == {"host-b"}
    assert store.query(hosts.hostnames_up) == ["host-a"]
    sup.reconcile()
    assert lost_calls(fake_ray) == ["host-b"]  # told once
    fake_ray.nodes.append(node("n-b2", "m2", label="host-b"))  # back, on a new node
    sup.reconcile()
    assert sup.lost == set() and len(fake_ray.agents.created) == 3
    returned = fake_ray.agents.created[-1]
    assert returned.args[0] == "host-b" and sup.agents["host-b"] is returned
    assert returned.calls == [("sweep", True)]  # a forced report marks the host up again
    assert fake_ray.agents.created[0].calls == []  # host-a's agent was left alone


def test_hosts_the_store_has_up_without_a_node_are_lost_at_the_first_reconcile_only(database_url, store, fake_ray):
    for hostname in ("host-a", "host-gone"):  # up in the store from a previous daemon
        store.transact(hosts.upsert_host, hostname)
    fake_ray.nodes = [node("n-a", "m1", label="host-a", head=True)]
    sup = Supervisor(RuntimeConfig(database_url=database_url))
    sup.reconcile()
    assert lost_calls(fake_ray) == ["host-gone"] and store.query(hosts.hostnames_up) == ["host-a"]
    store.transact(hosts.upsert_host, "host-late")  # appears in the store later: not this step's business
    sup.reconcile()
    assert lost_calls(fake_ray) == ["host-gone"]
    assert sorted(store.query(hosts.hostnames_up)) == ["host-a", "host-late"]
    assert [h.args[0] for h in fake_ray.agents.created] == ["host-a"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_nothing_lost_looks_up_no_placement_sync(database_url, store, fake_ray):
    fake_ray.nodes = [node("n-a", "m1", label="host-a", head=True)]
    Supervisor(RuntimeConfig(database_url=database_url)).reconcile()
    assert fake_ray.looked_up == []


def test_singletons_start_once_each_and_on_the_head_with_sqlite(monkeypatch):
    sync_class, binder_class = ActorClass(), ActorClass()
    monkeypatch.setattr(placement_sync_module, "PlacementSync", sync_class)
    monkeypatch.setattr(binder_module, "Binder", binder_class)
    waited = []
    monkeypatch.setattr(supervisor_module.ray, "get", lambda refs, timeout=None: waited.append((refs, timeout)))
    monkeypatch.setattr(supervisor_module.ray, "nodes", lambda: [
        node("n-worker", "m2", label="host-b"), node("n-old-head", "m0", head=True, alive=False),
        node("n-head", "m1", label="host-a", head=True)])
    config = RuntimeConfig(database_url="sqlite:////tmp/x.db", binder_count=3)
    sync, binders = Supervisor(config).start_singletons()
    assert sync_class.created == [sync] and binder_class.created == binders
    assert sync.options["name"] == PLACEMENT_SYNC_NAME and sync.args == (config,)
    assert [(b.options["name"], b.args) for b in binders] == [(binder_name(i), (config, i)) for i in range(3)]
    for handle in (sync, *binders):
        assert {k: handle.options[k] for k in ("namespace", "lifetime", "get_if_exists")} == {
            "namespace": NAMESPACE, "lifetime": "detached", "get_if_exists": True}
        strategy = handle.options["scheduling_strategy"]  # only the head opens the SQLite file
        assert (strategy.node_id, strategy.soft) == (nid("n-head"), False)
    (refs, timeout), = waited  # each one's status awaited before serving
    assert len(refs) == 4 and timeout == 120
    assert [h.calls for h in (sync, *binders)] == [[("status",)]] * 4
    opts = Supervisor(RuntimeConfig(database_url="postgresql://u@db/rayborg"))._singleton_options()
    assert "scheduling_strategy" not in opts  # any node reaches PostgreSQL


async def test_a_failing_reconcile_does_not_stop_the_loop(monkeypatch):
    sup = Supervisor(RuntimeConfig(database_url="sqlite:////tmp/x.db"), poll_interval=0.01)
    calls = []

    def reconcile():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("GCS unreachable")

    monkeypatch.setattr(sup, "reconcile", reconcile)
    sup.start()
    for _ in range(300):
        if len(calls) >= 3:
            break
        await asyncio.sleep(0.01)
    await sup.stop()
    assert len(calls) >= 3
    await asyncio.sleep(0.05)
    assert sup._task.done()

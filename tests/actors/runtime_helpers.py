"""Start and stop the whole actor runtime (supervisor, PlacementSync, binders, HostAgents) for tests."""

from __future__ import annotations

import time
import uuid

import ray

from rayborg.actors.placement_client import PlacementClient, provider_uuid
from rayborg.actors.runtime_config import NAMESPACE, RuntimeConfig
from rayborg.actors.supervisor import Supervisor


def wait_for(predicate, timeout: float = 120.0, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def make_compute_nodes(placement_url: str, hostnames) -> None:
    client = PlacementClient(placement_url)
    for name in hostnames:
        if client.get_provider(provider_uuid(name)) is None:
            resp = client._request("POST", "/resource_providers", {"name": name, "uuid": provider_uuid(name)})
            assert resp.status_code == 200, resp.text


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
    """No attach handle in use without an ARQ, none used by two ARQs, every Bound ARQ has one."""
    from sqlmodel import select

    from rayborg.store.tables import AttachHandle, ExtARQ

    def check(session):
        arqs = list(session.exec(select(ExtARQ)))
        used = [h.id for h in session.exec(select(AttachHandle).where(AttachHandle.in_use == True))]  # noqa: E712
        claimed = [a.attach_handle_id for a in arqs if a.attach_handle_id is not None]
        assert len(claimed) == len(set(claimed)), "a handle is claimed by two ARQs"
        assert sorted(used) == sorted(claimed), "in-use handles and ARQ claims disagree"
        assert all(a.attach_handle_id for a in arqs if a.state == "Bound")
        assert not [a.uuid for a in arqs if a.state == "BindStarted"], "ARQs stuck in BindStarted"

    store.query(check)


def store_matches_placement(store, placement) -> bool:
    from sqlmodel import select

    from rayborg.store.tables import Deployable

    deps = store.query(lambda s: [(d.rp_uuid, d.num_accelerators, d.placement_dirty)
                                  for d in s.exec(select(Deployable))])
    for rp, total, dirty in deps:
        if dirty or placement.get_provider(rp) is None:
            return False
        inventories = placement.get_inventories(rp)[1]
        if [inv["total"] for inv in inventories.values()] != [total]:
            return False
    return True

"""Start and stop the whole actor runtime (supervisor, PlacementSync, binders, HostAgents) for tests."""

from __future__ import annotations

import time
import uuid

import ray

from rayborg.actors.placement_client import PlacementClient, provider_uuid
from rayborg.actors.runtime_config import NAMESPACE, RuntimeConfig
from rayborg.actors.supervisor import Supervisor


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.2, what: str = "condition"):
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

"""Keeps the runtime whole: the PlacementSync singleton, the binder pool, and one HostAgent per
alive Ray node (also for nodes that join later). A node that leaves has its host marked lost.

Runs in the `rayborg serve` process (the Ray driver). Every step is idempotent (`get_if_exists`),
so a restarted daemon just reconciles again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from rayborg.actors import wake_loop
from rayborg.actors.runtime_config import (HOST_LABEL, NAMESPACE, PLACEMENT_SYNC_NAME, RuntimeConfig,
                                           binder_name, host_agent_name)

log = logging.getLogger("rayborg.supervisor")


def node_hostname(node: dict[str, Any]) -> str:
    """A node's host name: its `rayborg-host` label, else the machine's hostname."""
    return (node.get("Labels") or {}).get(HOST_LABEL) or node["NodeManagerHostname"]


def head_node_id() -> str:
    for node in ray.nodes():
        if node["Alive"] and "node:__internal_head__" in node.get("Resources", {}):
            return node["NodeID"]
    return ray.get_runtime_context().get_node_id()


class Supervisor:
    def __init__(self, config: RuntimeConfig, poll_interval: float = 2.0):
        self.config = config
        self.poll_interval = poll_interval
        self.agents: dict[str, Any] = {}  # hostname -> handle
        self.lost: set[str] = set()
        self._remembered = False  # hosts the store knows from before this daemon started: checked once
        self._task: asyncio.Task | None = None

    def _singleton_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"namespace": NAMESPACE, "lifetime": "detached", "get_if_exists": True}
        if self.config.database_url.startswith("sqlite"):
            # Only the head can open the SQLite file: keep the store's writers there.
            opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(head_node_id(), soft=False)
        return opts

    def start_singletons(self) -> tuple[Any, list[Any]]:
        from rayborg.actors.binder import Binder
        from rayborg.actors.placement_sync import PlacementSync

        opts = self._singleton_options()
        sync = PlacementSync.options(name=PLACEMENT_SYNC_NAME, **opts).remote(self.config)
        binders = [Binder.options(name=binder_name(i), **opts).remote(self.config, i)
                   for i in range(self.config.binder_count)]
        ray.get([sync.status.remote(), *[b.status.remote() for b in binders]], timeout=120)
        return sync, binders

    def reconcile(self) -> None:
        from rayborg.actors.host_agent import HostAgent

        alive: dict[str, dict[str, Any]] = {}
        for node in ray.nodes():
            if node["Alive"]:
                alive.setdefault(node_hostname(node), node)
        for hostname, node in alive.items():
            if hostname in self.lost:
                # Back again: a label-pinned agent restarts by itself, a node-pinned one is gone;
                # either way a forced report marks the host up again.
                self.lost.discard(hostname)
                self.agents.pop(hostname, None)
                returning = True
            else:
                returning = False
            if hostname in self.agents:
                continue
            labels = node.get("Labels") or {}
            if labels.get(HOST_LABEL):
                placement = {"label_selector": {HOST_LABEL: hostname}}
            else:
                placement = {"scheduling_strategy": NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)}
            self.agents[hostname] = HostAgent.options(
                name=host_agent_name(hostname), namespace=NAMESPACE, lifetime="detached",
                get_if_exists=True, **placement).remote(hostname, self.config)
            if returning:
                self.agents[hostname].sweep.remote(True)
            log.info("host %s: HostAgent started on node %s", hostname, node["NodeID"][:12])
        gone = set(self.agents) - set(alive) - self.lost
        if not self._remembered:
            # A node that left while no daemon was watching: the store still has its host up.
            gone |= set(_hosts_up(self.config.database_url)) - set(alive) - self.lost
            self._remembered = True
        if gone:
            sync = ray.get_actor(PLACEMENT_SYNC_NAME, namespace=NAMESPACE)
            for hostname in gone:
                sync.host_lost.remote(hostname)
                self.lost.add(hostname)

    async def _step(self) -> bool:
        await asyncio.to_thread(self.reconcile)
        return True

    def start(self) -> None:
        """Reconcile now, then every `poll_interval` (after a failure too: wake_loop logs it)."""
        wake = asyncio.Event()
        wake.set()
        self._task = wake_loop.start(self._step, wake, poll=self.poll_interval, retry=self.poll_interval,
                                     max_backoff=self.poll_interval)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()


def _hosts_up(database_url: str) -> list[str]:
    """Hostnames the store has as up (they reported and were not seen leaving)."""
    from rayborg.store.engine import Store
    from rayborg.store.hosts import hostnames_up

    store = Store(database_url)
    try:
        return store.query(hostnames_up)
    finally:
        store.dispose()

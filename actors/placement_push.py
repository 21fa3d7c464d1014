"""Mirror the store's device tree into Placement: push what is dirty, delete what is tombstoned.

Idempotent and resumable: the dirty marks and tombstones live in the store (store/placement_marks.py),
so a restarted PlacementSync (or one that found Placement down) simply pushes again. An unchanged
tree makes no Placement call at all; a changed deployable costs O(1) calls.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from rayborg.actors.placement_client import PlacementClient, PlacementError, PlacementUnavailable
from rayborg.store import placement_marks
from rayborg.store.engine import Store
from rayborg.store.hosts import record_compute_node

log = logging.getLogger(__name__)


@dataclass
class PushResult:
    pushed: int = 0
    deleted: int = 0
    waiting_for_compute_node: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.errors and not self.waiting_for_compute_node


def _compute_node(store: Store, client: PlacementClient, hostname: str, cache: dict[str, str | None]) -> str | None:
    if hostname not in cache:
        cache[hostname] = client.find_provider_by_name(hostname)
        store.transact(record_compute_node, hostname, cache[hostname])
    return cache[hostname]


def push(store: Store, client: PlacementClient, hostname: str | None = None) -> PushResult:
    """Push every dirty deployable (of one host, or all) and every tombstone. Raises
    PlacementUnavailable when Placement cannot be reached (the marks stay for the next try)."""
    result = PushResult()
    compute_nodes: dict[str, str | None] = {}
    for dep_id, host in store.query(placement_marks.dirty, hostname):
        parent = _compute_node(store, client, host, compute_nodes)
        if parent is None:
            if host not in result.waiting_for_compute_node:
                result.waiting_for_compute_node.append(host)
            continue
        try:
            _push_one(store, client, dep_id, parent)
            result.pushed += 1
        except PlacementUnavailable:
            raise
        except PlacementError as exc:
            log.error("Placement refused deployable %s on %s: %s", dep_id, host, exc)
            result.errors.append(str(exc))
    result.deleted = _delete_tombstones(store, client, hostname)
    return result


def _push_one(store: Store, client: PlacementClient, dep_id: int, parent: str) -> None:
    loaded = store.query(placement_marks.to_push, dep_id, parent)
    if loaded is None:
        return
    desired, last = loaded
    client.apply(desired, last)
    store.transact(placement_marks.pushed, dep_id, desired)


def _delete_tombstones(store: Store, client: PlacementClient, hostname: str | None) -> int:
    deleted = 0
    for tomb_id, rp_uuid in store.query(placement_marks.tombstones, hostname):
        client.delete_provider(rp_uuid)
        store.transact(placement_marks.buried, tomb_id)
        deleted += 1
    return deleted

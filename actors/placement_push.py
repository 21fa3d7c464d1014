"""Mirror the store's device tree into Placement: push what is dirty, delete what is tombstoned.

Idempotent and resumable: the dirty marks and tombstones live in the store (store/placement_marks.py),
so a restarted PlacementSync (or one that found Placement down) simply pushes again. An unchanged
tree makes no Placement call at all; a changed deployable costs O(1) calls.

Nested deployables (an FPGA's PR regions under the whole FPGA) are nested RPs: a parent is pushed
before its children, and a child whose parent could not be pushed waits for the next push; tombstones
are deleted children first (Placement refuses to delete a provider that still has children).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from rayborg.actors.placement_client import PlacementClient, PlacementError, PlacementUnavailable
from rayborg.store import placement_marks
from rayborg.store.engine import Store
from rayborg.store.hosts import record_compute_node
from rayborg.store.placement_state import parent_ids

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
    dirty = store.query(placement_marks.dirty, hostname)
    parents = store.query(parent_ids, [dep_id for dep_id, _ in dirty]) if dirty else {}
    not_pushed: set[int] = set()  # dirty deployables whose RP may not exist yet: their children wait
    for dep_id, host in sorted(dirty, key=lambda d: (_depth(d[0], parents), d[0])):
        parent = _compute_node(store, client, host, compute_nodes)
        if parent is None:
            not_pushed.add(dep_id)
            if host not in result.waiting_for_compute_node:
                result.waiting_for_compute_node.append(host)
            continue
        if parents.get(dep_id) in not_pushed:
            not_pushed.add(dep_id)
            result.errors.append(f"deployable {dep_id} waits for its parent deployable {parents[dep_id]}")
            continue
        try:
            _push_one(store, client, dep_id, parent)
            result.pushed += 1
        except PlacementUnavailable:
            raise
        except PlacementError as exc:
            log.error("Placement refused deployable %s on %s: %s", dep_id, host, exc)
            result.errors.append(str(exc))
            not_pushed.add(dep_id)
    result.deleted = _delete_tombstones(store, client, hostname, result)
    return result


def _depth(dep_id: int, parents: dict[int, int | None]) -> int:
    """How many dirty ancestors a dirty deployable has (0 for a root, or a child of a clean one)."""
    depth, seen = 0, {dep_id}
    while (dep_id := parents.get(dep_id)) is not None and dep_id in parents and dep_id not in seen:
        seen.add(dep_id)
        depth += 1
    return depth


def _push_one(store: Store, client: PlacementClient, dep_id: int, parent: str) -> None:
    loaded = store.query(placement_marks.to_push, dep_id, parent)
    if loaded is None:
        return
    desired, last = loaded
    client.apply(desired, last)
    store.transact(placement_marks.pushed, dep_id, desired)


def _delete_tombstones(store: Store, client: PlacementClient, hostname: str | None, result: PushResult) -> int:
    """Newest tombstones first (a nested card's regions were stored, so tombstoned, after their
    parent); a provider Placement keeps for its children (409) is tried again after the others."""
    deleted = 0
    waiting = sorted(store.query(placement_marks.tombstones, hostname), reverse=True)
    while waiting:
        refused: list[tuple[int, str, PlacementError]] = []
        for tomb_id, rp_uuid in waiting:
            try:
                client.delete_provider(rp_uuid)
            except PlacementUnavailable:
                raise
            except PlacementError as exc:
                if exc.status != 409:
                    raise
                refused.append((tomb_id, rp_uuid, exc))
                continue
            store.transact(placement_marks.buried, tomb_id)
            deleted += 1
        if len(refused) == len(waiting):  # no progress: its children are not ours to delete (yet)
            for _, rp_uuid, exc in refused:
                log.error("Placement keeps provider %s: %s", rp_uuid, exc)
                result.errors.append(str(exc))
            break
        waiting = [(tomb_id, rp_uuid) for tomb_id, rp_uuid, _ in refused]
    return deleted

"""Mirror the store's device tree into Placement: push what is dirty, delete what is tombstoned.

Idempotent and resumable: the dirty marks and tombstones live in the store, so a restarted
PlacementSync (or one that found Placement down) simply pushes again. An unchanged tree makes no
Placement call at all; a changed deployable costs O(1) calls.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlmodel import Session, select

from rayborg.actors.placement_client import PlacementClient, PlacementError, PlacementUnavailable, ProviderState
from rayborg.actors.report_apply import attributes_of, desired_traits
from rayborg.store.engine import Store
from rayborg.store.tables import Deployable, Device, DeviceStatus, Host, PlacementTombstone

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


def desired_state(session: Session, dep: Deployable, device: Device, parent_uuid: str) -> ProviderState:
    attrs = attributes_of(session, dep.id)
    total = dep.num_accelerators
    reserved = total if device.status == DeviceStatus.MAINTAINING.value else 0
    return ProviderState(uuid=dep.rp_uuid, name=dep.name, parent_uuid=parent_uuid,
                         resource_class=attrs.get("rc", "FPGA"), total=total, reserved=reserved,
                         traits=tuple(desired_traits(attrs)))


def _dirty(store: Store, hostname: str | None) -> list[tuple[int, str]]:
    def q(session: Session):
        stmt = (select(Deployable.id, Device.hostname).join(Device, Device.id == Deployable.device_id)
                .where(Deployable.placement_dirty == True))  # noqa: E712 - SQL expression
        if hostname:
            stmt = stmt.where(Device.hostname == hostname)
        return list(session.exec(stmt))

    return store.query(q)


def _compute_node(store: Store, client: PlacementClient, hostname: str, cache: dict[str, str | None]) -> str | None:
    if hostname not in cache:
        cache[hostname] = client.find_provider_by_name(hostname)

        def record(session: Session) -> None:
            host = session.exec(select(Host).where(Host.hostname == hostname)).first()
            if host is not None:
                host.compute_rp_uuid = cache[hostname]
                host.sync_error = None if cache[hostname] else f"no compute node named {hostname} in Placement"

        store.transact(record)
    return cache[hostname]


def push(store: Store, client: PlacementClient, hostname: str | None = None) -> PushResult:
    """Push every dirty deployable (of one host, or all) and every tombstone. Raises
    PlacementUnavailable when Placement cannot be reached (the marks stay for the next try)."""
    result = PushResult()
    compute_nodes: dict[str, str | None] = {}
    for dep_id, host in _dirty(store, hostname):
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
    def load(session: Session):
        dep = session.get(Deployable, dep_id)
        if dep is None:
            return None
        device = session.get(Device, dep.device_id)
        last = ProviderState.from_dict(dep.placement_state) if dep.placement_state else None
        return desired_state(session, dep, device, parent), last

    loaded = store.query(load)
    if loaded is None:
        return
    desired, last = loaded
    if last is not None and last.parent_uuid != parent:
        last = None  # compute node re-created: check everything again
    client.apply(desired, last)

    def save(session: Session) -> None:
        dep = session.get(Deployable, dep_id)
        if dep is None:
            return
        dep.placement_state = desired.as_dict()
        # Changed again while we pushed: stay dirty so the next push picks the change up.
        now = desired_state(session, dep, session.get(Device, dep.device_id), parent)
        dep.placement_dirty = now != desired

    store.transact(save)


def _delete_tombstones(store: Store, client: PlacementClient, hostname: str | None) -> int:
    def q(session: Session):
        stmt = select(PlacementTombstone)
        if hostname:
            stmt = stmt.where(PlacementTombstone.hostname == hostname)
        return [(t.id, t.rp_uuid) for t in session.exec(stmt)]

    deleted = 0
    for tomb_id, rp_uuid in store.query(q):
        client.delete_provider(rp_uuid)
        store.transact(lambda s, i=tomb_id: s.delete(s.get(PlacementTombstone, i)))
        deleted += 1
    return deleted


def mark_device_dirty(session: Session, device_id: int) -> None:
    """Enable/disable changes `reserved`: its deployables need a push."""
    for dep in session.exec(select(Deployable).where(Deployable.device_id == device_id)):
        dep.placement_dirty = True

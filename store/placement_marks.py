"""The Placement push's outbox in the store: deployables marked dirty and tombstones of removed ones.

Each function is one transaction of `actors/placement_push.py`; the marks stay until a push has
landed, so a restarted PlacementSync (or one that found Placement down) simply pushes again.
"""

from __future__ import annotations

from sqlmodel import Session, select

from rayborg.store.placement_state import ProviderState, desired_state
from rayborg.store.tables import Deployable, Device, PlacementTombstone


def dirty(session: Session, hostname: str | None = None) -> list[tuple[int, str]]:
    """(deployable id, hostname) of every deployable waiting for a push (of one host, or all)."""
    stmt = (select(Deployable.id, Device.hostname).join(Device, Device.id == Deployable.device_id)
            .where(Deployable.placement_dirty == True))  # noqa: E712 - SQL expression
    if hostname:
        stmt = stmt.where(Device.hostname == hostname)
    return list(session.exec(stmt))


def to_push(session: Session, dep_id: int, parent: str) -> tuple[ProviderState, ProviderState | None] | None:
    """(desired, last pushed) for one deployable under compute node `parent`; None when it is gone.
    A last state under another parent does not count (the compute node was re-created)."""
    dep = session.get(Deployable, dep_id)
    if dep is None:
        return None
    last = ProviderState.from_dict(dep.placement_state) if dep.placement_state else None
    desired = desired_state(session, dep, session.get(Device, dep.device_id), parent)
    if last is not None and last.parent_uuid != desired.parent_uuid:  # a nested RP's parent is a deployable's
        last = None
    return desired, last


def pushed(session: Session, dep_id: int, state: ProviderState) -> None:
    """Record what Placement now has; a deployable changed again meanwhile stays dirty."""
    dep = session.get(Deployable, dep_id)
    if dep is None:
        return
    dep.placement_state = state.as_dict()
    dep.placement_dirty = desired_state(session, dep, session.get(Device, dep.device_id), state.parent_uuid) != state


def mark_device_dirty(session: Session, device_id: int) -> None:
    """Enable/disable changes `reserved`: its deployables need a push."""
    for dep in session.exec(select(Deployable).where(Deployable.device_id == device_id)):
        dep.placement_dirty = True


def mark_host_dirty(session: Session, hostname: str) -> None:
    """The host was lost or is back: `reserved` of all its deployables changes."""
    stmt = select(Deployable).join(Device, Device.id == Deployable.device_id).where(Device.hostname == hostname)
    for dep in session.exec(stmt):
        dep.placement_dirty = True


def tombstones(session: Session, hostname: str | None = None) -> list[tuple[int, str]]:
    """(tombstone id, RP uuid) of removed deployables whose RP is still to be deleted."""
    stmt = select(PlacementTombstone)
    if hostname:
        stmt = stmt.where(PlacementTombstone.hostname == hostname)
    return [(t.id, t.rp_uuid) for t in session.exec(stmt)]


def buried(session: Session, tombstone_id: int) -> None:
    """The RP is gone from Placement: drop its tombstone."""
    tomb = session.get(PlacementTombstone, tombstone_id)
    if tomb is not None:
        session.delete(tomb)

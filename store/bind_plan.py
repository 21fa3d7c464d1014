"""What a binder needs to know about ARQs in flight, and the bookkeeping of Nova events.

Reads and small compare-and-set writes only; the claim itself is `arq_state.finish_bind`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import bindparam, func, update
from sqlmodel import Session, select

from rayborg.store.tables import (ARQState, AttachHandle, Deployable, Device, DeviceProfile, ExtARQ, Host,
                                  HostState, utcnow)

RESOLVED = (ARQState.BOUND.value, ARQState.BIND_FAILED.value, ARQState.DELETING.value)


@dataclass(frozen=True)
class BindPlan:
    arq_uuid: str
    state: str
    hostname: str | None
    instance_uuid: str | None
    deployable_id: int | None
    deployable_name: str | None
    driver_name: str | None
    bitstream_id: str | None      # to program first, or None
    attach_type: str | None
    error: str | None             # a reason to fail without trying
    standalone: bool = False      # rayborg chose the device: it allocates it in Placement too


def load(session: Session, arq_uuid: str) -> BindPlan | None:
    return load_many(session, [arq_uuid]).get(arq_uuid)


# Built once: building these selects cost more than running them (a binder runs them per batch).
_PLAN_ROWS = (
    select(ExtARQ.uuid, ExtARQ.state, ExtARQ.hostname, ExtARQ.instance_uuid, ExtARQ.device_rp_uuid,
           ExtARQ.standalone, ExtARQ.device_profile_group_id, DeviceProfile.groups, Deployable.id,
           Deployable.name, Deployable.driver_name, Deployable.bitstream_id, Device.hostname, Host.state)
    .outerjoin(DeviceProfile, DeviceProfile.id == ExtARQ.device_profile_id)
    .outerjoin(Deployable, Deployable.rp_uuid == ExtARQ.device_rp_uuid)
    .outerjoin(Device, Device.id == Deployable.device_id)
    .outerjoin(Host, Host.hostname == Device.hostname)
    .where(ExtARQ.uuid.in_(bindparam("uuids", expanding=True)))
    .order_by(ExtARQ.id, Deployable.id))
_ATTACH_TYPES = (select(AttachHandle.deployable_id, func.min(AttachHandle.attach_type))
                 .where(AttachHandle.deployable_id.in_(bindparam("deployables", expanding=True)))
                 .group_by(AttachHandle.deployable_id))


def load_many(session: Session, arq_uuids: list[str]) -> dict[str, BindPlan]:
    """The plans of these ARQs (those that exist), in two queries whatever their number."""
    rows = session.execute(_PLAN_ROWS, {"uuids": list(arq_uuids)}).all()
    dep_ids = sorted({r[8] for r in rows if r[8] is not None})
    attach_types = dict(session.execute(_ATTACH_TYPES, {"deployables": dep_ids}).all()) if dep_ids else {}
    plans: dict[str, BindPlan] = {}
    for (uuid, state, hostname, instance, rp_uuid, standalone, group_id, groups, dep_id, dep_name, driver,
         loaded, dev_host, host_state) in rows:
        if uuid in plans:  # two deployables with one RP uuid: the first, as a lookup by RP would
            continue
        error = bitstream = None
        if dep_id is None:
            error = f"no deployable with resource provider {rp_uuid}"
        else:
            if host_state == HostState.LOST.value:
                error = f"host {dev_host} has left the cluster"
            group = (groups or [])[group_id] if 0 <= group_id < len(groups or []) else {}
            wanted = group.get("accel:bitstream_id")
            if wanted and wanted != loaded:
                bitstream = wanted
        plans[uuid] = BindPlan(arq_uuid=uuid, state=state, hostname=hostname, instance_uuid=instance,
                               deployable_id=dep_id, deployable_name=dep_name, driver_name=driver,
                               bitstream_id=bitstream, attach_type=attach_types.get(dep_id), error=error,
                               standalone=bool(standalone))
    return plans


def in_flight(session: Session, idle_seconds: float | None = None) -> list[tuple[str, str | None]]:
    """(uuid, instance) of every ARQ still in BindStarted (only those whose row has not changed for
    `idle_seconds`, when given)."""
    stmt = select(ExtARQ.uuid, ExtARQ.instance_uuid).where(ExtARQ.state == ARQState.BIND_STARTED.value)
    if idle_seconds is not None:
        stmt = stmt.where(ExtARQ.updated_at < utcnow() - timedelta(seconds=idle_seconds))
    return list(session.exec(stmt))


def pending_events(session: Session) -> dict[str, list[tuple[str, str]]]:
    """instance -> [(arq uuid, state)] for resolved ARQs whose Nova event is still owed. An
    instance is reported only once none of its ARQs is still binding (one call per instance)."""
    rows = session.exec(select(ExtARQ.uuid, ExtARQ.instance_uuid, ExtARQ.state)
                        .where(ExtARQ.nova_event_pending == True, ExtARQ.instance_uuid.is_not(None)))  # noqa: E712
    out: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for arq_uuid, instance, state in rows:
        out[instance].append((arq_uuid, state))
    if not out:
        return {}
    busy = set(session.exec(select(ExtARQ.instance_uuid).where(
        ExtARQ.instance_uuid.in_(list(out)), ExtARQ.state == ARQState.BIND_STARTED.value)))
    return {inst: sorted(arqs) for inst, arqs in out.items()
            if inst not in busy and all(s in RESOLVED for _, s in arqs)}


def pending_event_count(session: Session) -> int:
    """ARQs whose Nova event is still owed (the outbox's size, for the metrics gauge)."""
    return session.scalar(select(func.count()).select_from(ExtARQ)
                          .where(ExtARQ.nova_event_pending == True)) or 0  # noqa: E712


def clear_events(session: Session, arq_uuids: list[str]) -> None:
    session.execute(update(ExtARQ).where(ExtARQ.uuid.in_(arq_uuids)).values(nova_event_pending=False))


def mdev_handles(session: Session, arq_uuids: list[str]) -> list[tuple[str, str, dict]]:
    """(hostname, mdev uuid, attach info) of the MDEV handles these ARQs hold: their mdevs are to
    be removed from the host once the ARQs let go of them."""
    import json

    stmt = (select(Device.hostname, AttachHandle.uuid, AttachHandle.attach_info)
            .join(ExtARQ, ExtARQ.attach_handle_id == AttachHandle.id)
            .join(Deployable, Deployable.id == AttachHandle.deployable_id)
            .join(Device, Device.id == Deployable.device_id)
            .where(AttachHandle.attach_type == "MDEV", ExtARQ.uuid.in_(arq_uuids)))
    return [(host, uuid, json.loads(info)) for host, uuid, info in session.exec(stmt)]


@dataclass(frozen=True)
class Releasing:
    """What ARQs about to be unbound or deleted hold outside the store: the mdevs of their MDEV
    handles, to be removed from their hosts, and the consumers of standalone ones, whose Placement
    allocations are to be pushed again."""

    mdevs: list[tuple[str, str, dict]]
    consumers: list[str]


def releasing(session: Session, arq_uuids: list[str]) -> Releasing:
    """What these ARQs hold. Pass only ARQs the caller has locked and may change: the binder removes
    what this names, whoever owns it. Reading it from the locked rows, not from the request, keeps
    another project's ARQs (not changed: 404, or nothing to delete) out of it, and the locks keep a
    concurrent bind from changing what they hold before they are released."""
    stmt = select(ExtARQ.instance_uuid).where(ExtARQ.standalone.is_(True), ExtARQ.instance_uuid.is_not(None),
                                              ExtARQ.uuid.in_(arq_uuids))
    return Releasing(mdevs=mdev_handles(session, arq_uuids), consumers=sorted(set(session.exec(stmt))))


def unbind_releasing(session: Session, arq_uuids: list[str], project_id: str | None) -> Releasing:
    """Unbind (`arq_state.unbind`) in the same transaction that reads what the ARQs let go of."""
    from rayborg.store import arq_state

    arqs = arq_state.lock_all(session, arq_uuids, project_id)  # NotFound when one is not visible
    held = releasing(session, [a.uuid for a in arqs])
    arq_state.unbind_locked(session, arqs)
    return held


def delete_releasing(session: Session, arq_uuids: list[str] | None, instance_uuid: str | None,
                     project_id: str | None, allow_bound: bool) -> tuple[Releasing, list[str]]:
    """Delete (`arq_state.delete_arqs`) in the same transaction that reads what the ARQs let go of;
    also the uuids that were not found."""
    from rayborg.store import arq_state

    arqs = arq_state.lock_for_delete(session, arq_uuids, instance_uuid, project_id)
    held = releasing(session, [a.uuid for a in arqs])
    return held, arq_state.delete_locked(session, arqs, arq_uuids, allow_bound)

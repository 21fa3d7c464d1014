"""What a binder needs to know about ARQs in flight, and the bookkeeping of Nova events.

Reads and small compare-and-set writes only; the claim itself is `arq_state.finish_bind`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import update
from sqlmodel import Session, select

from rayborg.store.tables import (ARQState, AttachHandle, Deployable, Device, DeviceProfile, ExtARQ, Host,
                                  HostState)

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
    arq = session.exec(select(ExtARQ).where(ExtARQ.uuid == arq_uuid)).first()
    if arq is None:
        return None
    dep = (session.exec(select(Deployable).where(Deployable.rp_uuid == arq.device_rp_uuid)).first()
           if arq.device_rp_uuid else None)
    error = None
    bitstream = driver = name = attach_type = None
    if dep is None:
        error = f"no deployable with resource provider {arq.device_rp_uuid}"
    else:
        device = session.get(Device, dep.device_id)
        host = session.exec(select(Host).where(Host.hostname == device.hostname)).first()
        if host is not None and host.state == HostState.LOST.value:
            error = f"host {device.hostname} has left the cluster"
        profile = session.get(DeviceProfile, arq.device_profile_id)
        groups = profile.groups if profile else []
        group = groups[arq.device_profile_group_id] if arq.device_profile_group_id < len(groups) else {}
        wanted = group.get("accel:bitstream_id")
        if wanted and wanted != dep.bitstream_id:
            bitstream = wanted
        driver, name = dep.driver_name, dep.name
        attach_type = session.exec(select(AttachHandle.attach_type)
                                   .where(AttachHandle.deployable_id == dep.id)).first()
    return BindPlan(arq_uuid=arq.uuid, state=arq.state, hostname=arq.hostname, instance_uuid=arq.instance_uuid,
                    deployable_id=dep.id if dep else None, deployable_name=name, driver_name=driver,
                    bitstream_id=bitstream, attach_type=attach_type, error=error, standalone=arq.standalone)


def in_flight(session: Session) -> list[tuple[str, str | None]]:
    """(uuid, instance) of every ARQ still in BindStarted."""
    return list(session.exec(select(ExtARQ.uuid, ExtARQ.instance_uuid)
                             .where(ExtARQ.state == ARQState.BIND_STARTED.value)))


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


def clear_events(session: Session, arq_uuids: list[str]) -> None:
    session.execute(update(ExtARQ).where(ExtARQ.uuid.in_(arq_uuids)).values(nova_event_pending=False))


def mdev_handles(session: Session, arq_uuids: list[str] | None = None,
                 instance_uuid: str | None = None) -> list[tuple[str, str, dict]]:
    """(hostname, mdev uuid, attach info) of the MDEV handles these ARQs hold: their mdevs are to
    be removed from the host once the ARQs let go of them."""
    import json

    stmt = (select(Device.hostname, AttachHandle.uuid, AttachHandle.attach_info)
            .join(ExtARQ, ExtARQ.attach_handle_id == AttachHandle.id)
            .join(Deployable, Deployable.id == AttachHandle.deployable_id)
            .join(Device, Device.id == Deployable.device_id)
            .where(AttachHandle.attach_type == "MDEV"))
    if instance_uuid is not None:
        stmt = stmt.where(ExtARQ.instance_uuid == instance_uuid)
    else:
        stmt = stmt.where(ExtARQ.uuid.in_(arq_uuids or []))
    return [(host, uuid, json.loads(info)) for host, uuid, info in session.exec(stmt)]


@dataclass(frozen=True)
class Releasing:
    """What ARQs about to be unbound or deleted hold outside the store: the mdevs of their MDEV
    handles, to be removed from their hosts, and the consumers of standalone ones, whose Placement
    allocations are to be pushed again."""

    mdevs: list[tuple[str, str, dict]]
    consumers: list[str]


def releasing(session: Session, arq_uuids: list[str] | None = None,
              instance_uuid: str | None = None) -> Releasing:
    stmt = select(ExtARQ.instance_uuid).where(ExtARQ.standalone == True, ExtARQ.instance_uuid.is_not(None))  # noqa: E712
    if instance_uuid is not None:
        stmt = stmt.where(ExtARQ.instance_uuid == instance_uuid)
    else:
        stmt = stmt.where(ExtARQ.uuid.in_(arq_uuids or []))
    return Releasing(mdevs=mdev_handles(session, arq_uuids, instance_uuid),
                     consumers=sorted(set(session.exec(stmt))))

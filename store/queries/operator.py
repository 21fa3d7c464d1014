"""What the operator CLI and the Python API read and change in the store (through the binders'
typed methods, which sit where the database is reachable): deployables with their holders and
their latest programming, ARQs, a summary per host and family, and enable/disable (with a reason) by
device or deployable."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from sqlalchemy import func, select
from sqlmodel import Session

from rayborg.store.claims import is_claim
from rayborg.store.device_choice import deployable_rows
from rayborg.store.prepared import iso_text
from rayborg.store.queries import program_requests
from rayborg.store.queries.devices import set_device_status as set_status
from rayborg.store.tables import Deployable, Device, DeviceProfile, DeviceStatus, ExtARQ, Host


def deployables(session: Session) -> list[dict[str, Any]]:
    """One row per deployable (`device_choice.deployable_rows`: with its device's status and
    status_reason), holders flagged when they are standalone claims (not Nova instances), and the
    deployable's latest programming through the API (PATCH .../program): `program_status`
    (requested | programming | done | failed), `program_image_uuid`, `program_error` and
    `program_updated_at`, all None when it was never programmed that way."""
    rows = deployable_rows(session)
    ids = dict(session.execute(select(Deployable.uuid, Deployable.id)).all()) if rows else {}
    programs = program_requests.latest(session) if rows else {}
    for row in rows:
        for holder in row["holders"]:
            holder["claim"] = is_claim(holder["consumer"])
        program = programs.get(ids.get(row["deployable_uuid"]))
        at = program and (program.updated_at or program.created_at)
        row.update(program_status=program and program.state, program_image_uuid=program and program.image_uuid,
                   program_error=program and program.error, program_updated_at=at and iso_text(at))
    return rows


def arqs(session: Session, state: str | None = None, host: str | None = None) -> list[dict[str, Any]]:
    """Every ARQ (of one state, bound on one host, when given), in creation order."""
    stmt = (select(ExtARQ.uuid, ExtARQ.state, DeviceProfile.name, ExtARQ.device_profile_group_id, ExtARQ.hostname,
                   ExtARQ.device_rp_uuid, ExtARQ.instance_uuid, Deployable.name, ExtARQ.project_id,
                   ExtARQ.bind_error)
            .outerjoin(DeviceProfile, DeviceProfile.id == ExtARQ.device_profile_id)
            .outerjoin(Deployable, Deployable.id == ExtARQ.deployable_id)
            .order_by(ExtARQ.id))
    if state:
        stmt = stmt.where(ExtARQ.state == state)
    if host:
        stmt = stmt.where(ExtARQ.hostname == host)
    return [{"uuid": uuid, "state": st, "device_profile": profile, "group": group, "host": hostname,
             "rp_uuid": rp, "instance_uuid": instance, "claim": is_claim(instance), "deployable": dep,
             "project_id": project, "bind_error": error}
            for uuid, st, profile, group, hostname, rp, instance, dep, project, error in session.execute(stmt)]


def summary(session: Session) -> dict[str, Any]:
    """Hosts, devices per family and status, ARQs per state, deployables Placement has yet to see."""
    hosts = [{"hostname": h.hostname, "state": h.state,
              "reported_at": h.reported_at.isoformat() if h.reported_at else None,
              "compute_rp_uuid": h.compute_rp_uuid, "sync_error": h.sync_error}
             for h in session.scalars(select(Host).order_by(Host.hostname))]
    families: dict[str, Counter] = defaultdict(Counter)
    for dtype, status, n in session.execute(
            select(Device.type, Device.status, func.count()).group_by(Device.type, Device.status)):
        families[dtype][status] += n
        families[dtype]["total"] += n
    arq_states = dict(session.execute(select(ExtARQ.state, func.count()).group_by(ExtARQ.state)).all())
    dirty = session.scalar(select(func.count()).select_from(Deployable)
                           .where(Deployable.placement_dirty.is_(True)))
    return {"hosts": hosts, "devices": {k: dict(v) for k, v in sorted(families.items())}, "arqs": arq_states,
            "placement_dirty": dirty}


def set_device_status(session: Session, device: str, enabled: bool, reason: str | None = None) -> dict[str, Any]:
    """Enable or disable a device given by its uuid, or by the name/uuid of one of its deployables;
    LookupError when there is none. A disable keeps `reason` (see `devices.set_device_status`)."""
    dev = session.scalars(select(Device).where(Device.uuid == device)).first()
    if dev is None:
        dep = session.scalars(select(Deployable).where((Deployable.name == device)
                                                       | (Deployable.uuid == device))).first()
        dev = session.get(Device, dep.device_id) if dep is not None else None
    if dev is None:
        raise LookupError(f"no device or deployable named {device!r}")
    status = DeviceStatus.ENABLED if enabled else DeviceStatus.MAINTAINING
    before = dev.status
    set_status(session, dev.uuid, status, reason)
    return {"device_uuid": dev.uuid, "host": dev.hostname, "type": dev.type, "status": status.value,
            "status_reason": dev.status_reason, "changed": before != status.value}

"""Reading accelerator requests as the API shows them (with profile name and attach handle), and the
transactions the API runs on them. State changes themselves live in `rayborg.store.arq_state`.

`project_id=None` means "every project" (admins); otherwise only that project's ARQs are visible.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlmodel import Session

from rayborg.store import arq_state
from rayborg.store.arq_state import RESOLVED, LockedError, NotFoundError, visible_to
from rayborg.store.tables import ARQState, AttachHandle, DeviceProfile, ExtARQ


@dataclass
class ARQView:
    """One ARQ with what its response needs from other tables."""

    uuid: str
    state: str
    device_profile_name: str
    device_profile_group_id: int
    hostname: str | None
    device_rp_uuid: str | None
    instance_uuid: str | None
    project_id: str | None
    attach_handle_type: str = ""
    attach_handle_uuid: str | None = None
    attach_handle_info: dict[str, str] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None


def views(session: Session, arqs: list[ExtARQ]) -> list[ARQView]:
    """ARQ rows as views: profile names and (for Bound ARQs) the claimed handles, loaded in bulk."""
    if not arqs:
        return []
    profile_ids = {a.device_profile_id for a in arqs}
    rows = session.execute(select(DeviceProfile.id, DeviceProfile.name)
                           .where(DeviceProfile.id.in_(profile_ids)))
    names = {profile_id: name for profile_id, name in rows}
    handle_ids = {a.attach_handle_id for a in arqs if a.attach_handle_id is not None}
    handles = {h.id: h for h in session.scalars(select(AttachHandle).where(AttachHandle.id.in_(handle_ids)))}
    out = []
    for arq in arqs:
        view = ARQView(uuid=arq.uuid, state=arq.state,
                       device_profile_name=names.get(arq.device_profile_id, ""),
                       device_profile_group_id=arq.device_profile_group_id, hostname=arq.hostname,
                       device_rp_uuid=arq.device_rp_uuid, instance_uuid=arq.instance_uuid,
                       project_id=arq.project_id, created_at=arq.created_at, updated_at=arq.updated_at)
        handle = handles.get(arq.attach_handle_id) if arq.state == ARQState.BOUND else None
        if handle is not None:
            view.attach_handle_type = handle.attach_type
            view.attach_handle_uuid = handle.uuid
            view.attach_handle_info = arq_state.handle_info(handle)
        out.append(view)
    return out


def list_arqs(session: Session, project_id: str | None = None, instance_uuid: str | None = None,
              resolved_only: bool = False) -> list[ARQView]:
    """Visible ARQs, optionally of one instance and only resolved ones. Asking for the resolved ARQs
    of an instance while some of its ARQs are still binding raises LockedError (423)."""
    stmt = visible_to(select(ExtARQ).order_by(ExtARQ.id), project_id)
    if instance_uuid is not None:
        stmt = stmt.where(ExtARQ.instance_uuid == instance_uuid)
    arqs = list(session.scalars(stmt))
    if resolved_only:
        unresolved = [a for a in arqs if a.state not in RESOLVED]
        if instance_uuid is not None and unresolved:
            raise LockedError(f"Accelerator requests of instance {instance_uuid} are not all resolved yet")
        arqs = [a for a in arqs if a.state in RESOLVED]
    return views(session, arqs)


def get_arq(session: Session, uuid: str, project_id: str | None = None) -> ARQView:
    arq = session.scalars(visible_to(select(ExtARQ).where(ExtARQ.uuid == uuid), project_id)).first()
    if arq is None:
        raise NotFoundError(f"Accelerator request not found: {uuid}")
    return views(session, [arq])[0]


def create(session: Session, profile_name: str, project_id: str | None) -> list[ARQView]:
    """Create the ARQs of a profile (one transaction) and return them as views."""
    return views(session, arq_state.create_arqs(session, profile_name, project_id))

"""Reading accelerator requests as the API shows them (with profile name and attach handle), and the
transactions the API runs on them. State changes themselves live in `rayborg.store.arq_state`.

`project_id=None` means "every project" (admins); otherwise only that project's ARQs are visible.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from functools import lru_cache

from sqlalchemy import bindparam, select
from sqlmodel import Session

from rayborg.store import arq_state, attach_handles
from rayborg.store.arq_state import RESOLVED
from rayborg.store.errors import LockedError, NotFoundError
from rayborg.store.prepared import Prepared, RawReader, raw_read
from rayborg.store.tables import ARQState, AttachHandle, DeviceProfile, ExtARQ


@dataclass(slots=True)
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
    # ISO text as the API prints it when read (prepared with iso_datetimes), a datetime when made here
    created_at: datetime | str | None = None
    updated_at: datetime | str | None = None


# One joined column select instead of ORM objects: reads are the hot path of the API, and building
# ExtARQ/AttachHandle instances costs several times what the query itself does.
_VIEW_SELECT = (
    select(ExtARQ.uuid, ExtARQ.state, DeviceProfile.name, ExtARQ.device_profile_group_id, ExtARQ.hostname,
           ExtARQ.device_rp_uuid, ExtARQ.instance_uuid, ExtARQ.project_id, ExtARQ.created_at,
           ExtARQ.updated_at, AttachHandle.attach_type, AttachHandle.uuid, AttachHandle.attach_info)
    .outerjoin(DeviceProfile, DeviceProfile.id == ExtARQ.device_profile_id)
    .outerjoin(AttachHandle, (AttachHandle.id == ExtARQ.attach_handle_id) & (ExtARQ.state == ARQState.BOUND.value))
    .order_by(ExtARQ.id)
)


def _to_views(rows) -> list[ARQView]:
    out = []
    for (uuid, state, profile, group, hostname, rp_uuid, instance, project, created, updated, handle_type,
         handle_uuid, handle_info) in rows:
        out.append(ARQView(uuid, state, profile or "", group, hostname, rp_uuid, instance, project,
                           handle_type or "", handle_uuid,
                           attach_handles.parse_handle_info(handle_info) if handle_uuid else {}, created, updated))
    return out


@lru_cache(maxsize=None)
def _prepared(by_uuid: bool, by_project: bool, by_instance: bool) -> Prepared:
    """The view select narrowed by the bind parameters named (one prepared read per shape)."""
    stmt = _VIEW_SELECT
    if by_uuid:
        stmt = stmt.where(ExtARQ.uuid == bindparam("uuid"))
    if by_project:
        stmt = stmt.where(ExtARQ.project_id == bindparam("project_id"))
    if by_instance:
        stmt = stmt.where(ExtARQ.instance_uuid == bindparam("instance_uuid"))
    return Prepared(stmt, iso_datetimes=True)


def _read(reader: RawReader, uuid: str | None = None, project_id: str | None = None,
          instance_uuid: str | None = None) -> list[ARQView]:
    given = {k: v for k, v in (("uuid", uuid), ("project_id", project_id), ("instance_uuid", instance_uuid))
             if v is not None}
    prepared = _prepared(uuid is not None, project_id is not None, instance_uuid is not None)
    return _to_views(reader.all(prepared, **given))


@raw_read
def list_arqs(reader: RawReader, project_id: str | None = None, instance_uuid: str | None = None,
              resolved_only: bool = False) -> list[ARQView]:
    """Visible ARQs, optionally of one instance and only resolved ones. Asking for the resolved ARQs
    of an instance while some of its ARQs are still binding raises LockedError (423)."""
    arqs = _read(reader, project_id=project_id, instance_uuid=instance_uuid)
    if resolved_only:
        unresolved = [a for a in arqs if a.state not in RESOLVED]
        if instance_uuid is not None and unresolved:
            raise LockedError(f"Accelerator requests of instance {instance_uuid} are not all resolved yet")
        arqs = [a for a in arqs if a.state in RESOLVED]
    return arqs


@raw_read
def get_arq(reader: RawReader, uuid: str, project_id: str | None = None) -> ARQView:
    found = _read(reader, uuid=uuid, project_id=project_id)
    if not found:
        raise NotFoundError(f"Accelerator request not found: {uuid}")
    return found[0]


def create(session: Session, profile_name: str, project_id: str | None,
           limits: arq_state.AmountLimits | None = None) -> list[ARQView]:
    """Create the ARQs of a profile (one transaction; refused when the profile asks for more than
    `limits`) and return them as views (new ARQs are Initial: nothing to join)."""
    rows = arq_state.create_arqs(session, profile_name, project_id, limits)
    return [ARQView(a.uuid, a.state, profile_name, a.device_profile_group_id, None, None, None, a.project_id,
                    created_at=a.created_at) for a in rows]

"""Database work for device profiles: list, look up, create, delete (refused while ARQs use them).

Every function takes a `Session` first so that callers run it through `Store.transact`/`query`.
"""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from rayborg.store.errors import ConflictError, NotFoundError
from rayborg.store.prepared import Prepared, RawReader, raw_read
from rayborg.store.tables import DeviceProfile, ExtARQ


class ProfileNotFound(NotFoundError):
    """No profile with that uuid or name."""


class ProfileConflict(ConflictError):
    """Duplicate name or uuid, or a profile still referenced by ARQs."""


class ProfileRow(NamedTuple):
    """The columns a profile's response shows (attribute access like a DeviceProfile; the dates as
    ISO text, `Prepared(iso_datetimes=True)`)."""

    uuid: str
    name: str
    description: str | None
    groups: list[dict[str, str]]
    created_at: str
    updated_at: str | None


_LIST = Prepared(select(DeviceProfile.uuid, DeviceProfile.name, DeviceProfile.description, DeviceProfile.groups,
                        DeviceProfile.created_at, DeviceProfile.updated_at).order_by(DeviceProfile.id),
                 iso_datetimes=True)


@raw_read
def list_profiles(reader: RawReader, names: list[str] | None = None) -> list[ProfileRow]:
    """Every profile, or those named (filtered here: profiles are few, and a fixed statement can
    be prepared where an IN list of any length cannot)."""
    rows = [ProfileRow(*r) for r in reader.all(_LIST)]
    if names is not None:
        wanted = set(names)
        rows = [r for r in rows if r.name in wanted]
    return rows


def get_profile(session: Session, *, uuid: str | None = None, name: str | None = None) -> DeviceProfile:
    column, value = (DeviceProfile.uuid, uuid) if uuid is not None else (DeviceProfile.name, name)
    profile = session.scalars(select(DeviceProfile).where(column == value)).first()
    if profile is None:
        raise ProfileNotFound(f"Device profile not found with {value}")
    return profile


def create_profile(session: Session, name: str, groups: list[dict[str, str]], description: str | None = None,
                   uuid: str | None = None, project_id: str | None = None) -> DeviceProfile:
    same = DeviceProfile.name == name
    if uuid:
        same = same | (DeviceProfile.uuid == uuid)
    existing = session.execute(select(DeviceProfile.name, DeviceProfile.uuid).where(same)).first()
    if existing is not None:
        what = f"name {name}" if existing.name == name else f"uuid {uuid}"
        raise ProfileConflict(f"A device profile with {what} already exists")
    profile = DeviceProfile(name=name, groups=groups, description=description, project_id=project_id)
    if uuid:
        profile.uuid = uuid
    session.add(profile)
    try:
        session.flush()
    except IntegrityError:  # a concurrent create won the race for the name or uuid
        raise ProfileConflict(f"A device profile named {name} already exists") from None
    return profile


def _in_use(session: Session, profile_ids: list[int]) -> list[str]:
    stmt = (select(DeviceProfile.name).join(ExtARQ, ExtARQ.device_profile_id == DeviceProfile.id)
            .where(DeviceProfile.id.in_(profile_ids)).distinct())
    return sorted(session.scalars(stmt))


def delete_profiles(session: Session, *, uuid: str | None = None, names: list[str] | None = None) -> None:
    """Delete one profile by uuid or several by name, all or nothing: 404 if any is unknown, 409 if
    any is referenced by accelerator requests."""
    if uuid is not None:
        profiles = [get_profile(session, uuid=uuid)]
    else:
        wanted = list(dict.fromkeys(names or []))
        profiles = list(session.scalars(select(DeviceProfile).where(DeviceProfile.name.in_(wanted))))
        missing = sorted(set(wanted) - {p.name for p in profiles})
        if missing:
            raise ProfileNotFound(f"Device profile not found with {','.join(missing)}")
    ids = [p.id for p in profiles]
    used = _in_use(session, ids)
    if used:
        raise ProfileConflict(f"Device profile {','.join(used)} is in use by accelerator requests")
    try:
        session.execute(delete(DeviceProfile).where(DeviceProfile.id.in_(ids)))
        session.flush()
    except IntegrityError:  # an ARQ was created from it meanwhile (the foreign key refuses)
        raise ProfileConflict("Device profile is in use by accelerator requests") from None

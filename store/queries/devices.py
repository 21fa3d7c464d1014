"""Database work for devices: list with exact-match filters, look up, enable/disable (with a reason)."""

from __future__ import annotations

from functools import lru_cache

from sqlalchemy import bindparam, select
from sqlmodel import Session

from rayborg.store.errors import InvalidError, NotFoundError
from rayborg.store.prepared import Prepared, RawReader, raw_read
from rayborg.store.tables import Deployable, Device, DeviceStatus, utcnow

FILTERS = ("type", "vendor", "hostname")


# The columns a device's response shows, in order: the list reads rows of these, several times
# cheaper than building ORM objects.
SHOWN = (Device.uuid, Device.type, Device.vendor, Device.model, Device.std_board_info,
          Device.vendor_board_info, Device.hostname, Device.status, Device.status_reason, Device.created_at,
          Device.updated_at)
REASON_MAX = 255  # devices.status_reason


@lru_cache(maxsize=None)
def _listing(keys: tuple[str, ...]) -> Prepared:
    """The device list narrowed by exact matches on `keys` (one prepared read per combination)."""
    stmt = select(*SHOWN).order_by(Device.id)
    for key in keys:
        stmt = stmt.where(getattr(Device, key) == bindparam(key))
    return Prepared(stmt, iso_datetimes=True)


@raw_read
def list_devices(reader: RawReader, filters: dict[str, str]) -> list[tuple]:
    """Rows of SHOWN (the dates as ISO text), filtered by exact match on any of FILTERS."""
    keys = tuple(key for key in FILTERS if key in filters)
    return reader.all(_listing(keys), **{key: filters[key] for key in keys})


def get_device(session: Session, uuid: str) -> Device:
    device = session.scalars(select(Device).where(Device.uuid == uuid)).first()
    if device is None:
        raise NotFoundError(f"Device {uuid} could not be found.")
    return device


def set_device_status(session: Session, uuid: str, status: DeviceStatus, reason: str | None = None) -> Device:
    """Enable (`enabled`) or disable (`maintaining`) a device; idempotent. Its deployables are marked
    for a Placement push, where `reserved` follows the status (PlacementSync does the push).

    A disable records `reason` (why, for operators and for the binds refused meanwhile); disabling a
    disabled device again replaces the reason when one is given and keeps it otherwise. Enabling
    clears it."""
    if reason is not None and len(reason) > REASON_MAX:
        raise InvalidError(f"reason: at most {REASON_MAX} characters")
    device = get_device(session, uuid)
    if status == DeviceStatus.ENABLED:
        reason = None
    elif reason is None and device.status == status.value:
        reason = device.status_reason
    if device.status != status.value or device.status_reason != reason:
        device.updated_at = utcnow()
        device.status_reason = reason
    if device.status != status.value:
        device.status = status.value
        for dep in session.scalars(select(Deployable).where(Deployable.device_id == device.id)):
            dep.placement_dirty = True
    return device


def stats(session: Session, limit: int) -> list[tuple[str, str, dict]]:
    """(hostname, device uuid, counters) of the first `limit` devices that have counters (the
    drivers' `stats` of their host's last report), for GET /metrics."""
    rows = session.execute(select(Device.hostname, Device.uuid, Device.stats).order_by(Device.id))
    out = []
    for hostname, uuid, counters in rows:
        if counters:  # SQL NULL and JSON null alike
            out.append((hostname, uuid, counters))
            if len(out) >= limit:
                break
    return out

"""Database work for devices: list with exact-match filters, look up, enable/disable."""

from __future__ import annotations

from functools import lru_cache

from sqlalchemy import bindparam, select
from sqlmodel import Session

from rayborg.store.errors import NotFoundError
from rayborg.store.prepared import Prepared, RawReader, raw_read
from rayborg.store.tables import Deployable, Device, DeviceStatus, utcnow

FILTERS = ("type", "vendor", "hostname")


# The columns a device's response shows, in order: the list reads rows of these, several times
# cheaper than building ORM objects.
SHOWN = (Device.uuid, Device.type, Device.vendor, Device.model, Device.std_board_info,
          Device.vendor_board_info, Device.hostname, Device.status, Device.created_at, Device.updated_at)


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


def set_device_status(session: Session, uuid: str, status: DeviceStatus) -> Device:
    """Enable (`enabled`) or disable (`maintaining`) a device; idempotent. Its deployables are marked
    for a Placement push, where `reserved` follows the status (PlacementSync does the push)."""
    device = get_device(session, uuid)
    if device.status != status.value:
        device.status, device.updated_at = status.value, utcnow()
        for dep in session.scalars(select(Deployable).where(Deployable.device_id == device.id)):
            dep.placement_dirty = True
    return device

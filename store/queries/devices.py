"""Database work for devices: list with exact-match filters, look up, enable/disable."""

from __future__ import annotations

from sqlalchemy import select
from sqlmodel import Session

from rayborg.store.errors import NotFoundError
from rayborg.store.tables import Deployable, Device, DeviceStatus, utcnow

FILTERS = ("type", "vendor", "hostname")


# The columns a device's response shows, in order: the list reads rows of these, several times
# cheaper than building ORM objects.
SHOWN = (Device.uuid, Device.type, Device.vendor, Device.model, Device.std_board_info,
          Device.vendor_board_info, Device.hostname, Device.status, Device.created_at, Device.updated_at)


def list_devices(session: Session, filters: dict[str, str]) -> list:
    stmt = select(*SHOWN).order_by(Device.id)
    for key in FILTERS:
        if key in filters:
            stmt = stmt.where(getattr(Device, key) == filters[key])
    return list(session.execute(stmt))


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

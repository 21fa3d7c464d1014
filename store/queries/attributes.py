"""Database work for attributes: list with filters, look up, create on an existing deployable, delete."""

from __future__ import annotations

from sqlalchemy import select
from sqlmodel import Session

from rayborg.store.errors import ConflictError, InvalidError, NotFoundError
from rayborg.store.tables import Attribute, Deployable


def list_attributes(session: Session, deployable_id: int | None = None, key: str | None = None) -> list[Attribute]:
    stmt = select(Attribute).order_by(Attribute.id)
    if deployable_id is not None:
        stmt = stmt.where(Attribute.deployable_id == deployable_id)
    if key is not None:
        stmt = stmt.where(Attribute.key == key)
    return list(session.scalars(stmt))


def get_attribute(session: Session, uuid: str) -> Attribute:
    attr = session.scalars(select(Attribute).where(Attribute.uuid == uuid)).first()
    if attr is None:
        raise NotFoundError(f"Attribute {uuid} could not be found.")
    return attr


def create_attribute(session: Session, deployable_id: int, key: str, value: str) -> Attribute:
    # A reference to a missing deployable is a bad body, not a missing URL: 400.
    if session.get(Deployable, deployable_id) is None:
        raise InvalidError(f"Deployable with id {deployable_id} does not exist")
    if session.scalars(select(Attribute.id).where(Attribute.deployable_id == deployable_id,
                                                  Attribute.key == key)).first() is not None:
        raise ConflictError(f"Deployable {deployable_id} already has an attribute {key!r}")
    attr = Attribute(deployable_id=deployable_id, key=key, value=value, source="operator")
    session.add(attr)
    session.flush()
    return attr


def delete_attribute(session: Session, uuid: str) -> None:
    session.delete(get_attribute(session, uuid))

"""Database work for attributes: the flat /v2/attributes form (list with filters, look up, create on an
existing deployable, delete) and the per-deployable form of the 2023.1 attribute API (addressed by
deployable uuid and attribute uuid or key: list, show, create several, update, delete one or all).

Every row written here is the operator's (`source="operator"`): a host report leaves it alone and it
wins over the driver's value for its key (store/host_reports.py). A write to `rc` or a `traitN` key
changes what the deployable's resource provider should look like (store/placement_state.py), so it
marks the deployable placement-dirty in the same transaction; the writers return whether they did,
and the caller nudges PlacementSync to push at once.
"""

from __future__ import annotations

import re
import uuid as uuidlib

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from rayborg.drivers.base import valid_resource_class, valid_trait
from rayborg.store.errors import ConflictError, InvalidError, NotFoundError
from rayborg.store.tables import AttachHandle, Attribute, Deployable, Device, utcnow

# Keys whose values Placement sees: the resource class and the traits of the deployable's RP.
_PLACEMENT_KEY = re.compile(r"rc|trait\d+")


def affects_placement(key: str) -> bool:
    return _PLACEMENT_KEY.fullmatch(key) is not None


def _check_value(session: Session, dep: Deployable, key: str, value: str) -> None:
    """An `rc` or `traitN` value must be a name Placement accepts; `rc` cannot change while one of the
    deployable's accelerators is attached (Placement refuses to drop an inventory in use)."""
    if not affects_placement(key):
        return
    what = "resource class" if key == "rc" else "trait"
    valid = valid_resource_class if key == "rc" else valid_trait
    if not valid(value):  # Placement would refuse the push, long after this request answered
        raise InvalidError(f"Attribute {key!r} is a Placement {what}: {value!r} must be a standard "
                           f"{what} (os-{'resource-classes' if key == 'rc' else 'traits'}) or CUSTOM_ "
                           "followed by upper-case letters, digits and '_'")
    if key == "rc":
        _check_rc_free(session, dep)


def _flush_new(session: Session, dep: Deployable) -> None:
    """Insert the new rows now. A key another transaction inserted meanwhile (PostgreSQL runs them side
    by side, so both passed the check above) breaks the unique (deployable, key) constraint: 409."""
    dep_uuid = dep.uuid  # read now: after a failed flush the session can load nothing more
    try:
        session.flush()
    except IntegrityError:
        raise ConflictError(f"Deployable {dep_uuid} already has an attribute of that key "
                            "(created concurrently)") from None


def _touched(dep: Deployable, keys) -> bool:
    """Mark the deployable for a Placement push when one of `keys` is seen by Placement."""
    if any(affects_placement(k) for k in keys):
        dep.placement_dirty = True
        dep.updated_at = utcnow()
        return True
    return False


def _host_to_ask(session: Session, dep: Deployable, keys) -> str | None:
    """After a delete: the deployable's host when a Placement key went (its agent should report again,
    so that the driver's own value of a key it reports comes back now, not at its next change)."""
    if not _touched(dep, keys):
        return None
    return session.scalar(select(Device.hostname).where(Device.id == dep.device_id))


# -- the flat form: /v2/attributes ---------------------------------------------------------------

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
    dep = session.get(Deployable, deployable_id)
    if dep is None:
        raise InvalidError(f"Deployable with id {deployable_id} does not exist")
    if session.scalars(select(Attribute.id).where(Attribute.deployable_id == deployable_id,
                                                  Attribute.key == key)).first() is not None:
        raise ConflictError(f"Deployable {deployable_id} already has an attribute {key!r}")
    _check_value(session, dep, key, value)
    attr = Attribute(deployable_id=deployable_id, key=key, value=value, source="operator")
    session.add(attr)
    _flush_new(session, dep)
    _touched(dep, [key])
    return attr


def delete_attribute(session: Session, uuid: str) -> str | None:
    """Delete one attribute; its deployable's host when Placement's view changed (`_host_to_ask`)."""
    attr = get_attribute(session, uuid)
    dep = session.get(Deployable, attr.deployable_id)
    if attr.key == "rc":
        _check_rc_free(session, dep)
    session.delete(attr)
    return _host_to_ask(session, dep, [attr.key])


# -- the per-deployable form: /v2/deployable/{uuid}/attribute ------------------------------------

def deployable(session: Session, dep_uuid: str) -> Deployable:
    dep = session.scalars(select(Deployable).where(Deployable.uuid == dep_uuid)).first()
    if dep is None:
        raise NotFoundError(f"Deployable {dep_uuid} could not be found.")
    return dep


def list_of_deployable(session: Session, dep_uuid: str) -> list[Attribute]:
    dep = deployable(session, dep_uuid)
    return list(session.scalars(select(Attribute).where(Attribute.deployable_id == dep.id).order_by(Attribute.id)))


def _find(session: Session, dep: Deployable, uuid_or_key: str) -> Attribute:
    """By uuid first (a uuid-shaped key is still found by its key), then by key."""
    stmt = select(Attribute).where(Attribute.deployable_id == dep.id)
    attr = None
    if _is_uuid(uuid_or_key):
        attr = session.scalars(stmt.where(Attribute.uuid == str(uuidlib.UUID(uuid_or_key)))).first()
    if attr is None:
        attr = session.scalars(stmt.where(Attribute.key == uuid_or_key)).first()
    if attr is None:
        raise NotFoundError(f"Deployable {dep.uuid} has no attribute {uuid_or_key!r}.")
    return attr


def _is_uuid(value: str) -> bool:
    try:
        uuidlib.UUID(value)
    except ValueError:
        return False
    return len(value) == 36


def get_of_deployable(session: Session, dep_uuid: str, uuid_or_key: str) -> Attribute:
    return _find(session, deployable(session, dep_uuid), uuid_or_key)


def create_for_deployable(session: Session, dep_uuid: str, items: list[tuple[str, str]]) -> bool:
    """Create all of `items` (key, value) or none: a key given twice, or one the deployable already
    has, is a conflict. True when Placement's view of the deployable changed."""
    dep = deployable(session, dep_uuid)
    keys = [k for k, _ in items]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise ConflictError(f"Attribute key(s) {', '.join(map(repr, twice))} given more than once")
    taken = sorted(session.scalars(select(Attribute.key).where(Attribute.deployable_id == dep.id,
                                                               Attribute.key.in_(keys))))
    if taken:
        raise ConflictError(f"Deployable {dep.uuid} already has attribute(s) {', '.join(map(repr, taken))}")
    for key, value in items:
        _check_value(session, dep, key, value)
    session.add_all([Attribute(deployable_id=dep.id, key=k, value=v, source="operator") for k, v in items])
    _flush_new(session, dep)
    return _touched(dep, keys)


def update_of_deployable(session: Session, dep_uuid: str, uuid_or_key: str, value: str) -> bool:
    """Set one attribute's value. The row becomes the operator's: the next host report keeps it even
    when the driver reports another value for its key. True when Placement's view changed."""
    dep = deployable(session, dep_uuid)
    attr = _find(session, dep, uuid_or_key)
    if attr.value == value and attr.source == "operator":
        return False
    if attr.value != value:
        _check_value(session, dep, attr.key, value)
    attr.value, attr.source, attr.updated_at = value, "operator", utcnow()
    return _touched(dep, [attr.key])


def delete_of_deployable(session: Session, dep_uuid: str, uuid_or_key: str) -> str | None:
    dep = deployable(session, dep_uuid)
    attr = _find(session, dep, uuid_or_key)
    if attr.key == "rc":
        _check_rc_free(session, dep)
    session.delete(attr)
    return _host_to_ask(session, dep, [attr.key])


def delete_all_of_deployable(session: Session, dep_uuid: str) -> str | None:
    dep = deployable(session, dep_uuid)
    attrs = list(session.scalars(select(Attribute).where(Attribute.deployable_id == dep.id)))
    if any(a.key == "rc" for a in attrs):
        _check_rc_free(session, dep)
    for attr in attrs:
        session.delete(attr)
    return _host_to_ask(session, dep, [a.key for a in attrs])


def _check_rc_free(session: Session, dep: Deployable) -> None:
    if session.scalars(select(AttachHandle.id).where(
            AttachHandle.deployable_id == dep.id, AttachHandle.in_use == True)).first() is not None:  # noqa: E712
        raise ConflictError(f"Deployable {dep.uuid} has accelerators in use: its resource class cannot change")

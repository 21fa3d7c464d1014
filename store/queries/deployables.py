"""Database work for deployables: list, look up with their attributes, record programming requests."""

from __future__ import annotations

from sqlalchemy import exists, select
from sqlmodel import Session

from rayborg.store.errors import ConflictError, NotFoundError
from rayborg.store.tables import ARQState, Attribute, Deployable, ExtARQ, ProgramRequest

BUSY_STATES = (ARQState.BIND_STARTED.value, ARQState.BOUND.value)


def attributes_by_deployable(session: Session, ids: list[int] | None = None) -> dict[int, list[Attribute]]:
    stmt = select(Attribute).order_by(Attribute.id)
    if ids is not None:
        stmt = stmt.where(Attribute.deployable_id.in_(ids))
    out: dict[int, list[Attribute]] = {}
    for attr in session.scalars(stmt):
        out.setdefault(attr.deployable_id, []).append(attr)
    return out


def list_deployables(session: Session) -> list[tuple[Deployable, list[Attribute]]]:
    deps = list(session.scalars(select(Deployable).order_by(Deployable.id)))
    attrs = attributes_by_deployable(session)
    return [(d, attrs.get(d.id, [])) for d in deps]


def get_deployable(session: Session, uuid: str) -> tuple[Deployable, list[Attribute]]:
    dep = session.scalars(select(Deployable).where(Deployable.uuid == uuid)).first()
    if dep is None:
        raise NotFoundError(f"Deployable {uuid} could not be found.")
    return dep, attributes_by_deployable(session, [dep.id]).get(dep.id, [])


def record_program_request(session: Session, deployable_uuid: str, image_uuid: str,
                           project_id: str | None) -> tuple[Deployable, list[Attribute], ProgramRequest]:
    """Record a request to program `image_uuid`; refused (409) while an ARQ holds the deployable."""
    dep, attrs = get_deployable(session, deployable_uuid)
    busy = session.scalar(select(exists().where(ExtARQ.deployable_id == dep.id, ExtARQ.state.in_(BUSY_STATES))))
    if busy:
        raise ConflictError(f"Deployable {deployable_uuid} is in use by a bound accelerator request; "
                            "unbind it before programming")
    request = ProgramRequest(deployable_id=dep.id, image_uuid=image_uuid, project_id=project_id)
    session.add(request)
    session.flush()
    return dep, attrs, request

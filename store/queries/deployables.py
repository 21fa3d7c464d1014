"""Database work for deployables: list, look up with their attributes and their last programming
request, record programming requests."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import exists, select
from sqlmodel import Session

from rayborg.store.errors import ConflictError, NotFoundError
from rayborg.store.queries import program_requests
from rayborg.store.tables import ARQState, Attribute, Deployable, ExtARQ, ProgramRequest

BUSY_STATES = (ARQState.BIND_STARTED.value, ARQState.BOUND.value)


@dataclass(frozen=True)
class DeployableView:
    """What the API shows of a deployable: the row, its attributes, its last programming request."""

    deployable: Deployable
    attributes: list[Attribute]
    program: ProgramRequest | None


def attributes_by_deployable(session: Session, ids: list[int] | None = None) -> dict[int, list[Attribute]]:
    stmt = select(Attribute).order_by(Attribute.id)
    if ids is not None:
        stmt = stmt.where(Attribute.deployable_id.in_(ids))
    out: dict[int, list[Attribute]] = {}
    for attr in session.scalars(stmt):
        out.setdefault(attr.deployable_id, []).append(attr)
    return out


def list_deployables(session: Session) -> list[DeployableView]:
    deps = list(session.scalars(select(Deployable).order_by(Deployable.id)))
    attrs = attributes_by_deployable(session)
    programs = program_requests.latest(session)
    return [DeployableView(d, attrs.get(d.id, []), programs.get(d.id)) for d in deps]


def get_deployable(session: Session, uuid: str) -> DeployableView:
    dep = session.scalars(select(Deployable).where(Deployable.uuid == uuid)).first()
    if dep is None:
        raise NotFoundError(f"Deployable {uuid} could not be found.")
    return DeployableView(dep, attributes_by_deployable(session, [dep.id]).get(dep.id, []),
                          program_requests.latest(session, [dep.id]).get(dep.id))


def record_program_request(session: Session, deployable_uuid: str, image_uuid: str,
                           project_id: str | None) -> DeployableView:
    """Record a request to program `image_uuid`; refused (409) while an ARQ holds the deployable or
    another request for it has not ended (the host would only queue it behind that one)."""
    view = get_deployable(session, deployable_uuid)
    dep = view.deployable
    busy = session.scalar(select(exists().where(ExtARQ.deployable_id == dep.id, ExtARQ.state.in_(BUSY_STATES))))
    if busy:
        raise ConflictError(f"Deployable {deployable_uuid} is in use by a bound accelerator request; "
                            "unbind it before programming")
    if view.program is not None and view.program.state in program_requests.ACTIVE:
        raise ConflictError(f"Deployable {deployable_uuid} is already being programmed with image "
                            f"{view.program.image_uuid} (program_status {view.program.state}); wait until "
                            "it has ended")
    request = ProgramRequest(deployable_id=dep.id, image_uuid=image_uuid, project_id=project_id)
    session.add(request)
    session.flush()
    return DeployableView(dep, view.attributes, request)

"""Programming requests made through the API: what to program where, and how it ended."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlmodel import Session

from rayborg.store.tables import Deployable, Device, ProgramRequest, utcnow


# A request in one of these states still runs (or waits for a programmer); done and failed are final.
ACTIVE = ("requested", "programming")


@dataclass(frozen=True)
class ProgramJob:
    request_uuid: str
    hostname: str
    driver_name: str | None
    deployable_name: str
    image_uuid: str


def start(session: Session, request_uuid: str) -> ProgramJob | None:
    """requested -> programming; None when the request is gone or already taken."""
    row = session.execute(select(ProgramRequest, Deployable, Device)
                          .join(Deployable, Deployable.id == ProgramRequest.deployable_id)
                          .join(Device, Device.id == Deployable.device_id)
                          .where(ProgramRequest.uuid == request_uuid)).first()
    if row is None or row[0].state != "requested":
        return None
    request, dep, device = row
    request.state, request.updated_at = "programming", utcnow()
    return ProgramJob(request_uuid, device.hostname, dep.driver_name, dep.name, request.image_uuid)


def finish(session: Session, request_uuid: str, error: str | None) -> None:
    request = session.scalars(select(ProgramRequest).where(ProgramRequest.uuid == request_uuid)).first()
    if request is not None:
        request.state = "failed" if error else "done"
        request.error, request.updated_at = error, utcnow()


def interrupted(session: Session) -> list[str]:
    """Requests a previous front door took but never finished: back to `requested`."""
    rows = list(session.scalars(select(ProgramRequest).where(ProgramRequest.state == "programming")))
    for row in rows:
        row.state = "requested"
    return [r.uuid for r in rows]


def requested(session: Session) -> list[str]:
    """Uuids of the requests waiting for a programmer."""
    return list(session.scalars(select(ProgramRequest.uuid).where(ProgramRequest.state == "requested")))


def outcome(session: Session, request_uuid: str) -> tuple[str, str | None]:
    """(state, error) of one request."""
    row = session.execute(select(ProgramRequest.state, ProgramRequest.error)
                          .where(ProgramRequest.uuid == request_uuid)).one()
    return row[0], row[1]


def latest(session: Session, deployable_ids: list[int] | None = None) -> dict[int, ProgramRequest]:
    """Each deployable's most recent request (all deployables', or those of `deployable_ids`)."""
    newest = select(func.max(ProgramRequest.id)).group_by(ProgramRequest.deployable_id)
    if deployable_ids is not None:
        newest = newest.where(ProgramRequest.deployable_id.in_(deployable_ids))
    return {r.deployable_id: r for r in session.scalars(select(ProgramRequest).where(ProgramRequest.id.in_(newest)))}

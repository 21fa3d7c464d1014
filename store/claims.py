"""Standalone claims (`rayborg.claim`): ARQs bound to a *consumer* uuid that names the Ray job that
claimed (`JJJJJJJJ-c1a1-4...`), so that binder 0 can release the claims of jobs that ended, even
across restarts of every actor.

A claim is a standalone bind like a PATCH without `/device_rp_uuid`: `start` creates the profile's
ARQs and starts their bind in one transaction (the device chosen there, `arq_state.start_bind`);
the binder finishes it (Placement allocation through the `standalone_allocations` outbox,
programming, the driver's prepare) and a release is a delete.
"""

from __future__ import annotations

import re
import uuid as uuidlib
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlmodel import Session

from rayborg.store import arq_state, device_choice, quotas
from rayborg.store.errors import InvalidError
from rayborg.store.tables import Attribute, Deployable, Device, DeviceProfile, ExtARQ

CLAIM_MARK = "c1a1"  # second group of a standalone claim's consumer uuid
CLAIM_RE = re.compile(rf"^([0-9a-f]{{8}})-{CLAIM_MARK}-4[0-9a-f]{{3}}-8[0-9a-f]{{3}}-[0-9a-f]{{12}}$")
NO_JOB = "00000000"


class ClaimError(InvalidError):
    """A claim that cannot be satisfied (no matching free device, Placement refused, limits...)."""


def consumer_uuid(job_id: str | None) -> str:
    """A new claim consumer naming the Ray job (hex job id; NO_JOB when there is none)."""
    job = (job_id or NO_JOB).lower()
    if not re.fullmatch(r"[0-9a-f]{8}", job):
        job = NO_JOB
    r = uuidlib.uuid4().hex
    return f"{job}-{CLAIM_MARK}-4{r[:3]}-8{r[3:6]}-{r[6:18]}"


def claim_job(consumer: str | None) -> str | None:
    """The Ray job id a claim's consumer uuid names (None: not a standalone claim, or no job)."""
    m = CLAIM_RE.match(consumer or "")
    return m.group(1) if m and m.group(1) != NO_JOB else None


def is_claim(consumer: str | None) -> bool:
    return bool(CLAIM_RE.match(consumer or ""))


def log_fields(consumer: str, device: dict[str, Any]) -> dict[str, Any]:
    """rayborg.logs fields of a claimed device (`devices` row): the consumer goes where Nova's
    instance would."""
    return {"instance": consumer, "arq": device["arq"], "host": device["host"],
            "deployable": device["deployable"], "device": device.get("device_uuid")}


def start(session: Session, profile: str, count: int, host: str | None, consumer: str, project_id: str,
          limits: arq_state.AmountLimits, exclude: Iterable[str] = (),
          quota: quotas.Limits | None = None) -> list[str]:
    """Create `count` x the profile's ARQs and start their standalone bind to `consumer` (devices
    chosen on `host`, or any, never among the RPs of `exclude`); all or nothing. ClaimError when
    the profile or count is out of bounds or nothing free matches; QuotaExceeded (naming the
    resource, limit and usage) when the claim takes the project over `quota`, as a bind PATCH."""
    if count < 1:
        raise ClaimError(f"count must be at least 1, not {count}")
    if session.execute(select(DeviceProfile.id).where(DeviceProfile.name == profile)).first() is None:
        raise ClaimError(f"device profile {profile!r} not found")
    try:  # the same bounds as a POST of the profile: per group, and on all the ARQs of the claim
        arqs = arq_state.create_arqs(session, profile, project_id, limits)
    except InvalidError as exc:
        raise ClaimError(str(exc)) from None
    if len(arqs) * count > limits.per_profile:
        raise ClaimError(f"{count} x profile {profile!r} is {len(arqs) * count} accelerators, more than the "
                         f"{limits.per_profile} one claim may ask for")
    for _ in range(count - 1):
        arqs += arq_state.create_arqs(session, profile, project_id)
    if not arqs:
        raise ClaimError(f"device profile {profile!r} asks for no resources")
    targets = {a.uuid: arq_state.BindTarget(host, None, consumer, project_id) for a in arqs}
    try:
        return arq_state.start_bind(session, targets, None, exclude=frozenset(exclude), quota=quota)
    except device_choice.NoMatchingDevice as exc:
        where = f" on host {host}" if host else ""
        traits = f" with traits {sorted(exc.required)}" if exc.required else ""
        raise ClaimError(f"no free {exc.resource_class}{traits}{where} for profile {profile!r} "
                         f"({len(arqs)} accelerators asked)") from None


_DEVICES = (select(ExtARQ.uuid, ExtARQ.state, ExtARQ.bind_error, ExtARQ.hostname, ExtARQ.device_rp_uuid,
                   Attribute.value, Deployable.name, Deployable.uuid, Device.uuid, Deployable.driver_name,
                   Deployable.bitstream_id)
            .outerjoin(Deployable, Deployable.rp_uuid == ExtARQ.device_rp_uuid)
            .outerjoin(Attribute, (Attribute.deployable_id == Deployable.id) & (Attribute.key == "rc"))
            .outerjoin(Device, Device.id == Deployable.device_id)
            .order_by(ExtARQ.id))


def devices(session: Session, consumer: str) -> list[dict[str, Any]]:
    """The claim's ARQs with the deployables they were bound to (state and bind_error included)."""
    rows = session.execute(_DEVICES.where(ExtARQ.instance_uuid == consumer)).all()
    return [{"arq": arq, "state": state, "bind_error": error, "host": host, "rp_uuid": rp,
             "resource_class": rc, "deployable": dep, "deployable_uuid": dep_uuid, "device_uuid": dev_uuid,
             "driver": driver, "bitstream_id": bitstream}
            for arq, state, error, host, rp, rc, dep, dep_uuid, dev_uuid, driver, bitstream in rows]


def listing(session: Session) -> dict[str, list[str]]:
    """consumer -> ARQ uuids of every standalone claim."""
    out: dict[str, list[str]] = defaultdict(list)
    stmt = (select(ExtARQ.uuid, ExtARQ.instance_uuid)
            .where(ExtARQ.instance_uuid.like(f"________-{CLAIM_MARK}-%")).order_by(ExtARQ.id))
    for arq_uuid, consumer in session.execute(stmt):
        if is_claim(consumer):
            out[consumer].append(arq_uuid)
    return dict(out)

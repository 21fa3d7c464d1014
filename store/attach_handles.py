"""Attach handles: claiming free ones for binds (never one handle twice), giving them back, and
reading what a bound ARQ holds (for the driver's prepare/unprepare on its host).

Plain sync functions taking a `Session` first, for `Store.transact`; the ARQ state machine
(`arq_state`) calls the claims inside its own transitions.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import bindparam, select, text, update
from sqlmodel import Session

from rayborg.store.tables import AttachHandle, Deployable, Device, ExtARQ, utcnow

# A claim that lost a race retries while free handles remain (PostgreSQL only: they are locked by
# claims still in flight, which either commit or roll back within milliseconds).
CLAIM_ATTEMPTS = 200
CLAIM_BACKOFF_S = 0.005

_handles = AttachHandle.__table__


# Claiming for many deployables at once (a binder's batch spreads over many): one UPDATE picks up
# to n free handles of each wanted deployable, re-checking `in_use` so that two binders can never
# get the same one. PostgreSQL picks per deployable in a LATERAL subquery, skipping handles other
# transactions are claiming right now (row locks cannot go with window functions); SQLite has one
# writer at a time and numbers each deployable's free handles with a window function instead.
_CLAIM_MANY_SQL = {
    "postgresql": """
        UPDATE attach_handles SET in_use = true, updated_at = :now
        WHERE id IN (SELECT pick.id
                     FROM unnest(CAST(:deps AS integer[]), CAST(:counts AS integer[])) AS want(dep, n)
                     CROSS JOIN LATERAL (SELECT h.id FROM attach_handles h
                                         WHERE h.deployable_id = want.dep AND NOT h.in_use
                                         ORDER BY h.id LIMIT want.n FOR UPDATE SKIP LOCKED) AS pick)
          AND NOT in_use
        RETURNING id, deployable_id""",
    "sqlite": """
        UPDATE attach_handles SET in_use = 1, updated_at = :now
        WHERE id IN (SELECT id FROM (
                       SELECT h.id, want.value AS n,
                              row_number() OVER (PARTITION BY h.deployable_id ORDER BY h.id) AS nth
                       FROM attach_handles h JOIN json_each(:wants) AS want
                         ON h.deployable_id = CAST(want.key AS INTEGER)
                       WHERE NOT h.in_use)
                     WHERE nth <= n)
          AND NOT in_use
        RETURNING id, deployable_id""",
}
_CLAIM_MANY = {dialect: text(sql).bindparams(bindparam("now", type_=_handles.c.updated_at.type))
               for dialect, sql in _CLAIM_MANY_SQL.items()}
_WITH_FREE = (select(_handles.c.deployable_id).distinct()
              .where(_handles.c.deployable_id.in_(bindparam("deps", expanding=True)), _handles.c.in_use.is_(False)))


def claim(session: Session, wanted: dict[int, int]) -> dict[int, list[int]]:
    """Mark up to `wanted[deployable_id]` free attach handles of each deployable in use, atomically;
    deployable id -> the claimed handle ids, ascending (fewer when fewer are free).

    On PostgreSQL the pick skips handles that other transactions are claiming right now; a
    deployable left short while it still has free handles (such a claim rolled back) is tried again."""
    dialect = session.get_bind().dialect.name
    claimed: dict[int, list[int]] = {dep: [] for dep in wanted}
    short = {dep: n for dep, n in wanted.items() if n > 0}
    for _ in range(CLAIM_ATTEMPTS):
        params = ({"deps": list(short), "counts": list(short.values())} if dialect == "postgresql"
                  else {"wants": json.dumps(short)})
        for handle_id, dep in session.execute(_CLAIM_MANY[dialect], {**params, "now": utcnow()}).all():
            claimed[dep].append(handle_id)
        short = {dep: wanted[dep] - len(claimed[dep]) for dep in short if len(claimed[dep]) < wanted[dep]}
        if short:
            short = {dep: short[dep] for dep in session.execute(_WITH_FREE, {"deps": list(short)}).scalars()}
        if not short:
            break
        time.sleep(CLAIM_BACKOFF_S)  # lost a race while others' claims are in flight: try again
    return {dep: sorted(ids) for dep, ids in claimed.items()}


def release(session: Session, handle_id: int) -> bool:
    """Mark a claimed attach handle free again; False if it was not in use (or is gone)."""
    result = session.execute(update(_handles).where(_handles.c.id == handle_id, _handles.c.in_use.is_(True))
                             .values(in_use=False, updated_at=utcnow()))
    return result.rowcount == 1


@dataclass(frozen=True)
class HeldHandle:
    """The attach handle an ARQ holds, with where it is and which driver owns it: what the driver's
    `prepare`/`unprepare` on that host needs."""

    arq_uuid: str
    instance_uuid: str | None
    hostname: str
    driver_name: str
    uuid: str
    attach_type: str
    attach_info: dict[str, str] = field(default_factory=dict)


_HELD = (select(ExtARQ.uuid, ExtARQ.instance_uuid, Device.hostname, Deployable.driver_name, AttachHandle.uuid,
                AttachHandle.attach_type, AttachHandle.attach_info)
         .join(ExtARQ, ExtARQ.attach_handle_id == AttachHandle.id)
         .join(Deployable, Deployable.id == AttachHandle.deployable_id)
         .join(Device, Device.id == Deployable.device_id)
         .where(ExtARQ.uuid.in_(bindparam("uuids", expanding=True))))


def held(session: Session, arq_uuids: Iterable[str]) -> list[HeldHandle]:
    """The handles these ARQs hold, in ARQ uuid order."""
    rows = session.execute(_HELD, {"uuids": list(arq_uuids)}).all()
    return sorted((HeldHandle(arq, inst, host, driver, uuid, kind, parse_handle_info(info))
                   for arq, inst, host, driver, uuid, kind, info in rows), key=lambda h: h.arq_uuid)


def parse_handle_info(raw: str | None) -> dict[str, str]:
    """Stored `attach_info` JSON as a flat str -> str dict ({} when unreadable)."""
    try:
        info = json.loads(raw or "{}")
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in info.items()} if isinstance(info, dict) else {}

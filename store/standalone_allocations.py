"""The Placement allocations of standalone binds, as an outbox in the store.

A standalone bind (rayborg chose the device: no `/device_rp_uuid` in the PATCH) has no Nova to
allocate its device in Placement, so rayborg does, under the ARQs' consumer (`instance_uuid`), so
that a Nova scheduling from the same Placement never books the device again. Every transition of a
standalone ARQ marks its consumer dirty in the same transaction (`mark`); the consumer's binder then
brings Placement in line with `desired` and records what it pushed (`record_pushed`). Level-triggered
and idempotent: a crash or a Placement outage between the two steps only delays the push.

`pushed` remembers which RPs rayborg put into the consumer's allocations, so that a push changes
only those and leaves any other allocation of the consumer (Nova's, an operator's) as it is.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import delete, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, select

from rayborg.store.tables import ARQState, Attribute, Deployable, ExtARQ, StandaloneAllocation, utcnow

# ARQs that hold (or are about to hold) their device: the allocation must cover them.
HOLDING = (ARQState.BIND_STARTED.value, ARQState.BOUND.value)
Allocations = dict[str, dict[str, int]]  # rp uuid -> resource class -> amount

_table = StandaloneAllocation.__table__


def mark(session: Session, consumers: Iterable[str | None]) -> None:
    """Record that these consumers' allocations must be pushed again (one upsert each)."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    now = utcnow()
    for consumer in sorted({c for c in consumers if c}):
        stmt = insert(_table).values(consumer=consumer, dirty=True, version=1, pushed={}, updated_at=now)
        session.execute(stmt.on_conflict_do_update(
            index_elements=[_table.c.consumer],
            set_={"dirty": True, "version": _table.c.version + 1, "updated_at": now}))


def mark_arqs(session: Session, arqs: Iterable[ExtARQ]) -> None:
    """`mark` the consumers of the standalone ones among these ARQs (call before clearing them)."""
    mark(session, [a.instance_uuid for a in arqs if a.standalone])


def dirty(session: Session) -> list[str]:
    return list(session.exec(select(StandaloneAllocation.consumer).where(StandaloneAllocation.dirty == True)  # noqa: E712
                             .order_by(StandaloneAllocation.id)))


@dataclass(frozen=True)
class Pending:
    """What to push for one consumer: rayborg's part of its allocations, before and after."""

    consumer: str
    version: int
    pushed: Allocations
    desired: Allocations
    project_id: str | None


def pending(session: Session, consumer: str) -> Pending:
    row = session.exec(select(StandaloneAllocation).where(StandaloneAllocation.consumer == consumer)).first()
    stmt = (select(ExtARQ.device_rp_uuid, Attribute.value, ExtARQ.project_id)
            .join(Deployable, Deployable.rp_uuid == ExtARQ.device_rp_uuid)
            .join(Attribute, (Attribute.deployable_id == Deployable.id) & (Attribute.key == "rc"))
            .where(ExtARQ.instance_uuid == consumer, ExtARQ.standalone == True,  # noqa: E712
                   ExtARQ.state.in_(HOLDING)))
    desired: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    project = None
    for rp_uuid, resource_class, project_id in session.exec(stmt):
        desired[rp_uuid][resource_class] += 1
        project = project or project_id
    return Pending(consumer=consumer, version=row.version if row else 0, pushed=dict(row.pushed) if row else {},
                   desired={rp: dict(rcs) for rp, rcs in desired.items()}, project_id=project)


def record_pushed(session: Session, consumer: str, version: int, pushed: Allocations) -> bool:
    """Placement now holds `pushed` as rayborg's part of the consumer's allocations. Clean again
    unless the consumer changed since `version` was read; a clean, empty row is removed. Returns
    whether the consumer is clean."""
    session.execute(update(_table).where(_table.c.consumer == consumer)
                    .values(pushed=pushed, updated_at=utcnow()))
    clean = session.execute(update(_table).where(_table.c.consumer == consumer, _table.c.version == version)
                            .values(dirty=False)).rowcount == 1
    if clean and not pushed:
        session.execute(delete(_table).where(_table.c.consumer == consumer, _table.c.version == version))
    return clean

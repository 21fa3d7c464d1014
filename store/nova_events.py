"""The Nova-event outbox: resolved ARQs whose `accelerator-request-bound` event Nova is still owed.

A bind's completion sets `nova_event_pending` in its own transaction (`arq_state`); the binder that
owns the instance reads what is owed here, sends it and clears what Nova took. Level-triggered: a
binder restarted or a Nova that was down only delays the events.
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import func, update
from sqlmodel import Session, select

from rayborg.store.arq_state import RESOLVED
from rayborg.store.claims import is_claim
from rayborg.store.tables import ARQState, ExtARQ

_RESOLVED = frozenset(s.value for s in RESOLVED)


def pending(session: Session) -> dict[str, list[tuple[str, str]]]:
    """instance -> [(arq uuid, state)] for resolved ARQs whose Nova event is still owed. An
    instance is reported only once none of its ARQs is still binding (one call per instance)."""
    rows = session.exec(select(ExtARQ.uuid, ExtARQ.instance_uuid, ExtARQ.state)
                        .where(ExtARQ.nova_event_pending == True, ExtARQ.instance_uuid.is_not(None)))  # noqa: E712
    out: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for arq_uuid, instance, state in rows:
        if not is_claim(instance):  # a Python API claim's consumer is no Nova server (claim clears it)
            out[instance].append((arq_uuid, state))
    if not out:
        return {}
    busy = set(session.exec(select(ExtARQ.instance_uuid).where(
        ExtARQ.instance_uuid.in_(list(out)), ExtARQ.state == ARQState.BIND_STARTED.value)))
    return {inst: sorted(arqs) for inst, arqs in out.items()
            if inst not in busy and all(s in _RESOLVED for _, s in arqs)}


def pending_count(session: Session) -> int:
    """ARQs whose Nova event is still owed (the outbox's size, for the metrics gauge)."""
    return session.scalar(select(func.count()).select_from(ExtARQ)
                          .where(ExtARQ.nova_event_pending == True)) or 0  # noqa: E712


def clear(session: Session, arq_uuids: list[str]) -> None:
    """Nova took these ARQs' events (or nobody waits for them)."""
    session.execute(update(ExtARQ).where(ExtARQ.uuid.in_(arq_uuids)).values(nova_event_pending=False))

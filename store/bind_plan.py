"""What a binder needs to know about ARQs in flight, and what ARQs let go of when they are unbound
or deleted. Reads only, beside the unbind/delete transitions that read what they release; the
claim itself is `arq_state.finish_bind`, the Nova events are `nova_events`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import bindparam, update
from sqlmodel import Session, select

from rayborg.drivers.bitstreams import BitstreamQuery
from rayborg.store import arq_state, attach_handles
from rayborg.store.attach_handles import HeldHandle
from rayborg.store.device_choice import disabled_error
from rayborg.store.tables import (ARQState, Deployable, Device, DeviceProfile, DeviceStatus, ExtARQ, Host,
                                  HostState, utcnow)


@dataclass(frozen=True)
class BindPlan:
    arq_uuid: str
    state: str
    hostname: str | None
    instance_uuid: str | None
    deployable_id: int | None
    deployable_name: str | None
    driver_name: str | None
    bitstream_id: str | None      # to program first, or None
    error: str | None             # a reason to fail without trying
    standalone: bool = False      # rayborg chose the device: it allocates it in Placement too
    function: BitstreamQuery | None = None  # a function to run: found, programmed unless running


# Built once: building these selects cost more than running them (a binder runs them per batch).
_PLAN_ROWS = (
    select(ExtARQ.uuid, ExtARQ.state, ExtARQ.hostname, ExtARQ.instance_uuid, ExtARQ.device_rp_uuid,
           ExtARQ.standalone, ExtARQ.device_profile_group_id, DeviceProfile.groups, Deployable.id,
           Deployable.name, Deployable.driver_name, Deployable.bitstream_id, Device.hostname, Host.state,
           Device.uuid, Device.status, Device.status_reason)
    .outerjoin(DeviceProfile, DeviceProfile.id == ExtARQ.device_profile_id)
    .outerjoin(Deployable, Deployable.rp_uuid == ExtARQ.device_rp_uuid)
    .outerjoin(Device, Device.id == Deployable.device_id)
    .outerjoin(Host, Host.hostname == Device.hostname)
    .where(ExtARQ.uuid.in_(bindparam("uuids", expanding=True)))
    .order_by(ExtARQ.id, Deployable.id))


def load_many(session: Session, arq_uuids: list[str]) -> dict[str, BindPlan]:
    """The plans of these ARQs (those that exist), in one query whatever their number."""
    rows = session.execute(_PLAN_ROWS, {"uuids": list(arq_uuids)}).all()
    plans: dict[str, BindPlan] = {}
    for (uuid, state, hostname, instance, rp_uuid, standalone, group_id, groups, dep_id, dep_name, driver,
         loaded, dev_host, host_state, dev_uuid, dev_status, dev_reason) in rows:
        if uuid in plans:  # two deployables with one RP uuid: the first, as a lookup by RP would
            continue
        error = bitstream = function = None
        if dep_id is None:
            error = f"no deployable with resource provider {rp_uuid}"
        else:
            if host_state == HostState.LOST.value:
                error = f"host {dev_host} has left the cluster"
            elif dev_status == DeviceStatus.MAINTAINING.value:  # nothing programmed or prepared on it
                error = disabled_error(dev_uuid, dev_reason)
            group = (groups or [])[group_id] if 0 <= group_id < len(groups or []) else {}
            wanted = group.get("accel:bitstream_id")
            if wanted and wanted != loaded:
                bitstream = wanted
            function = BitstreamQuery.from_group(group)
            if function is not None and wanted:  # upstream fails such a bind too
                error = error or f"accel:bitstream_id and {function} in one group: name one bitstream"
        plans[uuid] = BindPlan(arq_uuid=uuid, state=state, hostname=hostname, instance_uuid=instance,
                               deployable_id=dep_id, deployable_name=dep_name, driver_name=driver,
                               bitstream_id=bitstream, error=error,
                               standalone=bool(standalone), function=function)
    return plans


def finish_quick(session: Session, arq_uuids: list[str],
                 slow: Callable[[BindPlan], bool]) -> tuple[dict[str, BindPlan], dict[str, str]]:
    """One transaction per binder batch: the ARQs' plans, and the binds that need nothing but a
    handle claimed finished (uuid -> state). Those `slow` picks (programming first, a device to
    prepare, a standalone allocation to make in Placement, a reason to fail) are left to the caller."""
    plans = load_many(session, arq_uuids)
    quick = [u for u, plan in plans.items() if plan.state == ARQState.BIND_STARTED and not slow(plan)]
    return plans, arq_state.finish_binds(session, quick) if quick else {}


def record_bitstream(session: Session, deployable_id: int, bitstream_id: str) -> None:
    """The deployable now holds `bitstream_id` (programmed for a bind)."""
    session.execute(update(Deployable).where(Deployable.id == deployable_id).values(bitstream_id=bitstream_id))


def instances(session: Session, arq_uuids: list[str]) -> dict[str, str | None]:
    """uuid -> instance of these ARQs (which binder owns each)."""
    stmt = select(ExtARQ.uuid, ExtARQ.instance_uuid).where(ExtARQ.uuid.in_(arq_uuids))
    return dict(session.execute(stmt).all())


def in_flight(session: Session, idle_seconds: float | None = None) -> list[tuple[str, str | None]]:
    """(uuid, instance) of every ARQ still in BindStarted (only those whose row has not changed for
    `idle_seconds`, when given)."""
    stmt = select(ExtARQ.uuid, ExtARQ.instance_uuid).where(ExtARQ.state == ARQState.BIND_STARTED.value)
    if idle_seconds is not None:
        stmt = stmt.where(ExtARQ.updated_at < utcnow() - timedelta(seconds=idle_seconds))
    return list(session.exec(stmt))


@dataclass(frozen=True)
class Releasing:
    """What ARQs about to be unbound or deleted hold outside the store: their attach handles (the
    driver may have prepared something on the host for them: unprepared by the binder), and the
    consumers of standalone ones, whose Placement allocations are to be pushed again."""

    arq_uuids: list[str]  # the ARQs released
    handles: list[HeldHandle]
    consumers: list[str]


def releasing(session: Session, arq_uuids: list[str]) -> Releasing:
    """What these ARQs hold. Pass only ARQs the caller has locked and may change: the binder removes
    what this names, whoever owns it. Reading it from the locked rows, not from the request, keeps
    another project's ARQs (not changed: 404, or nothing to delete) out of it, and the locks keep a
    concurrent bind from changing what they hold before they are released."""
    stmt = select(ExtARQ.instance_uuid).where(ExtARQ.standalone.is_(True), ExtARQ.instance_uuid.is_not(None),
                                              ExtARQ.uuid.in_(arq_uuids))
    return Releasing(arq_uuids=list(arq_uuids), handles=attach_handles.held(session, arq_uuids),
                     consumers=sorted(set(session.exec(stmt))))


def unbind_releasing(session: Session, arq_uuids: list[str], project_id: str | None) -> Releasing:
    """Unbind (`arq_state.unbind_locked`) in the same transaction that reads what the ARQs let go of."""
    arqs = arq_state.lock_all(session, arq_uuids, project_id)  # NotFound when one is not visible
    held = releasing(session, [a.uuid for a in arqs])
    arq_state.unbind_locked(session, arqs)
    return held


def delete_releasing(session: Session, arq_uuids: list[str] | None, instance_uuid: str | None,
                     project_id: str | None, allow_bound: bool) -> tuple[Releasing, list[str]]:
    """Delete (`arq_state.delete_arqs`) in the same transaction that reads what the ARQs let go of;
    also the uuids that were not found."""
    arqs = arq_state.lock_for_delete(session, arq_uuids, instance_uuid, project_id)
    held = releasing(session, [a.uuid for a in arqs])
    return held, arq_state.delete_locked(session, arqs, arq_uuids, allow_bound)

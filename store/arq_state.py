"""The ARQ state machine: create, start/finish a bind (claiming an attach handle), unbind, delete.

Plain sync functions taking a `Session` first, for `Store.transact` (the API runs them through
`atransact`; the binder actors call them directly). Every transition locks the ARQ rows (on
PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises writers) and is a compare-and-set on the
current state, so a lost race raises `StateConflict` instead of silently overwriting.

Transitions (api.md §6.2): BindStarted <- Initial|Unbound; Bound <- BindStarted;
BindFailed <- BindStarted|Bound; Unbound <- Initial|BindStarted|Bound|BindFailed;
Deleting <- anything else. UnbindFailed has the same sources as Unbound.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from itertools import zip_longest
from typing import Any

from sqlalchemy import bindparam, insert, or_, select, text, update
from sqlmodel import Session

from rayborg.store import attach_handles, quotas, standalone_allocations
from rayborg.store.errors import (InvalidError, NotFoundError, ServiceTokenRequired, StateConflict,
                                   StoreError)
from rayborg.store.tables import (ARQState, Deployable, Device, DeviceProfile, DeviceStatus,
                                  ExtARQ, new_uuid, utcnow)

log = logging.getLogger(__name__)

S = ARQState
TRANSITIONS: dict[ARQState, frozenset[ARQState]] = {
    S.BIND_STARTED: frozenset({S.INITIAL, S.UNBOUND}),
    S.BOUND: frozenset({S.BIND_STARTED}),
    S.BIND_FAILED: frozenset({S.BIND_STARTED, S.BOUND}),
    S.UNBOUND: frozenset({S.INITIAL, S.BIND_STARTED, S.BOUND, S.BIND_FAILED}),
    S.UNBIND_FAILED: frozenset({S.INITIAL, S.BIND_STARTED, S.BOUND, S.BIND_FAILED}),
    S.DELETING: frozenset(set(S) - {S.DELETING}),
}
# States Nova treats as final for a bind (`bind_state=resolved`).
RESOLVED = frozenset({S.BOUND, S.BIND_FAILED, S.DELETING})
# The states a bind is finished from (claiming a handle -> Bound, or BindFailed): Bound's sources.
_FINISHABLE = sorted(s.value for s in TRANSITIONS[S.BOUND])

_arqs = ExtARQ.__table__


@dataclass(frozen=True)
class BindTarget:
    """Where one ARQ is to be bound, as the bind PATCH names it. A standalone bind (no Nova) may
    leave out `device_rp_uuid`, and `hostname` too: `start_bind` then chooses a free matching
    deployable (on that host, if named) for it, in its own transaction (`store/device_choice.py`)."""

    hostname: str | None
    device_rp_uuid: str | None
    instance_uuid: str
    project_id: str | None = None

    @property
    def standalone(self) -> bool:
        """The device is for rayborg to choose."""
        return self.device_rp_uuid is None


@dataclass(frozen=True)
class AmountLimits:
    """Bounds on what one profile may ask for (Settings.max_group_amount, max_profile_amount)."""

    per_group: int    # the largest `resources:RC` amount of a group
    per_profile: int  # the most ARQs one profile yields (one POST creates them all)


def parse_amount(value: Any, limit: int) -> int | None:
    """A `resources:RC` amount: an ASCII decimal integer from 1 to `limit`, else None. Stricter than
    int(), which also takes "１", "1_0" and " 2 "."""
    if not isinstance(value, str) or not (value.isascii() and value.isdigit()) or len(value) > 18:
        return None
    number = int(value)
    return number if 1 <= number <= limit else None


def per_unit(group: dict[str, str], key: str) -> int:
    """ARQs per unit of a `resources:` amount: one per requested accelerator; Xilinx FPGAs count
    twice (management and user PF both go to the VM)."""
    return 2 if key == "resources:FPGA" and group.get("trait:CUSTOM_FPGA_XILINX") == "required" else 1


def arq_count(group: dict[str, str]) -> int:
    """ARQs one profile group yields."""
    return sum(int(value) * per_unit(group, key) for key, value in group.items()
               if key.startswith("resources:"))


def amounts_error(groups: list[dict[str, str]], limits: AmountLimits) -> str | None:
    """Why a profile's resource amounts are out of bounds, naming the group and key; None if they
    are not."""
    total = 0
    for index, group in enumerate(groups):
        for key, value in group.items():
            if not key.startswith("resources:"):
                continue
            number = parse_amount(value, limits.per_group)
            if number is None:
                return (f"group {index}: {key} amount {value!r} must be an ASCII decimal integer from 1 to "
                        f"{limits.per_group}")
            total += number * per_unit(group, key)
            if total > limits.per_profile:
                return (f"group {index}: {key} takes the profile to {total} accelerator requests, more than "
                        f"the {limits.per_profile} one profile may ask for")
    return None


_PROFILE_BY_NAME = (select(DeviceProfile.__table__.c.id, DeviceProfile.__table__.c.groups)
                    .where(DeviceProfile.__table__.c.name == bindparam("name")))


def create_arqs(session: Session, profile_name: str, project_id: str | None,
                limits: AmountLimits | None = None) -> list[Any]:
    """All ARQs for a profile, in state Initial, numbered by group; all or none (one transaction).
    Rows of extended_accelerator_requests, in id order. With `limits`, a profile stored before them
    that asks for more is refused (InvalidError naming the group and key) before anything is written."""
    profile = session.execute(_PROFILE_BY_NAME, {"name": profile_name}).first()
    if profile is None:
        raise NotFoundError(f"Device profile not found with {profile_name}")
    if limits is not None and (error := amounts_error(profile.groups, limits)):
        raise InvalidError(f"Device profile {profile_name}: {error}")
    now = utcnow()
    values = [{"uuid": new_uuid(), "state": S.INITIAL.value, "device_profile_id": profile.id,
               "device_profile_group_id": index, "project_id": project_id, "created_at": now,
               "nova_event_pending": False, "standalone": False}
              for index, group in enumerate(profile.groups) for _ in range(arq_count(group))]
    if not values:
        return []
    rows = session.execute(insert(_arqs).returning(*_arqs.c, sort_by_parameter_order=True), values).all()
    return sorted(rows, key=lambda r: r.id)


def visible_to(stmt, project_id: str | None):
    """`stmt` on ExtARQ limited to one project's rows (None: every project)."""
    return stmt if project_id is None else stmt.where(ExtARQ.project_id == project_id)


# Statements of the state machine's hot path, built once: building a statement and its cache key
# cost more than running it on SQLite. ARQs are read as Core rows (same attribute names as ExtARQ,
# no identity map to fill).
_LOCK_BY_UUID = (select(*_arqs.c).where(_arqs.c.uuid.in_(bindparam("uuids", expanding=True)))
                 .order_by(_arqs.c.id).with_for_update())
_LOCK_BY_UUID_IN_PROJECT = _LOCK_BY_UUID.where(_arqs.c.project_id == bindparam("project_id"))


def lock_arqs(session: Session, uuids: Iterable[str], project_id: str | None = None) -> list[Any]:
    """The ARQs (rows of extended_accelerator_requests) with these uuids the caller may see,
    row-locked in id order (no deadlocks)."""
    if project_id is None:
        return list(session.execute(_LOCK_BY_UUID, {"uuids": list(uuids)}))
    return list(session.execute(_LOCK_BY_UUID_IN_PROJECT, {"uuids": list(uuids), "project_id": project_id}))


def lock_all(session: Session, uuids: list[str], project_id: str | None) -> list[ExtARQ]:
    """`lock_arqs`, raising NotFoundError (naming them) when some are not there or not visible."""
    arqs = lock_arqs(session, uuids, project_id)
    missing = sorted(set(uuids) - {a.uuid for a in arqs})
    if missing:
        raise NotFoundError(f"Accelerator request not found: {', '.join(missing)}")
    return arqs


def _require_state(arqs: Iterable[ExtARQ], target: ARQState) -> None:
    wrong = [a for a in arqs if a.state not in TRANSITIONS[target]]
    if wrong:
        detail = ", ".join(f"{a.uuid} is {a.state}" for a in wrong)
        raise StateConflict(f"Cannot move accelerator requests to {target}: {detail}")


@lru_cache(maxsize=None)
def _cas_statement(target: ARQState, columns: tuple[str, ...]):
    sources = sorted(s.value for s in TRANSITIONS[target])
    return (update(_arqs).where(_arqs.c.id == bindparam("cas_id"), _arqs.c.state.in_(sources))
            .values(state=target.value, updated_at=bindparam("cas_now"),
                    **{c: bindparam(f"cas_{c}") for c in columns}))


def _cas(session: Session, arq_id: int, target: ARQState, **values) -> None:
    """Compare-and-set one ARQ's state; a row that changed state meanwhile is a conflict."""
    stmt = _cas_statement(target, tuple(sorted(values)))
    params = {"cas_id": arq_id, "cas_now": utcnow(), **{f"cas_{c}": v for c, v in values.items()}}
    if session.execute(stmt, params).rowcount != 1:
        sources = sorted(s.value for s in TRANSITIONS[target])
        raise StateConflict(f"Accelerator request {arq_id} left the states {sources} "
                            f"before it could become {target}")


def _lock_instances(session: Session, instances: list[str]) -> None:
    """Serialise binds per instance until commit, so that two concurrent PATCHes cannot both pass
    the "instance already has ARQs" check (SQLite's write lock does this already)."""
    if session.get_bind().dialect.name == "postgresql":
        for instance in instances:  # sorted by the caller: no deadlock between two PATCHes
            session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
                            {"key": f"arq-bind:{instance}"})


_INSTANCE_TAKEN = (select(_arqs.c.instance_uuid).where(_arqs.c.instance_uuid.in_(bindparam("instances", expanding=True)))
                   .limit(1))
# Only the caller's project's ARQs count for a non-admin: another project's use of an instance uuid
# must not show (a refusal would tell that it exists). ARQs of one instance never mix projects in
# what a project sees, lists or deletes, as every read is scoped the same way.
_INSTANCE_TAKEN_IN_PROJECT = _INSTANCE_TAKEN.where(_arqs.c.project_id == bindparam("project_id"))


def start_bind(session: Session, binds: dict[str, BindTarget], project_id: str | None = None,
               exclude: frozenset[str] = frozenset(), quota: quotas.Limits | None = None) -> list[str]:
    """Record where each ARQ goes and move them all to BindStarted, or change nothing.

    `project_id` limits what the caller sees (None: everything); standalone targets never get the
    RPs of `exclude` (a claim retrying after Placement refused them). Raises NotFoundError for an
    unknown ARQ, StateConflict for one not Initial/Unbound, InvalidError when an instance already has ARQs,
    and, for standalone targets (no `device_rp_uuid`), `device_choice.NoMatchingDevice` (a
    ConflictError) when no free deployable matches an ARQ's profile group. With `quota`, a bind that
    takes a project over a limit raises QuotaExceeded (`store/quotas.py`) and changes nothing."""
    if any(t.hostname is None and t.device_rp_uuid is not None for t in binds.values()):
        raise InvalidError("Fields absent in patch hostname")
    arqs = lock_all(session, list(binds), project_id)
    _require_state(arqs, S.BIND_STARTED)
    instances = sorted({t.instance_uuid for t in binds.values()})
    _lock_instances(session, instances)
    if project_id is None:
        taken = session.execute(_INSTANCE_TAKEN, {"instances": instances}).scalar()
    else:
        taken = session.execute(_INSTANCE_TAKEN_IN_PROJECT,
                                {"instances": instances, "project_id": project_id}).scalar()
    if taken is not None:
        raise InvalidError(f"Instance {taken} already has accelerator requests. Cannot bind additional ARQs.")
    standalone = {u for u, t in binds.items() if t.standalone}
    if standalone:
        binds = _choose_devices(session, arqs, binds, exclude)
        standalone_allocations.mark(session, [binds[u].instance_uuid for u in standalone])
    now = utcnow()
    by_columns: dict[bool, list[dict]] = defaultdict(list)  # with a project_id to set, or without
    for arq in arqs:
        target = binds[arq.uuid]
        by_columns[target.project_id is not None].append(
            {"b_id": arq.id, "b_now": now, "b_host": target.hostname, "b_rp": target.device_rp_uuid,
             "b_instance": target.instance_uuid, "b_standalone": arq.uuid in standalone,
             "b_project": target.project_id})
    for with_project, params in sorted(by_columns.items()):  # one executemany (one round trip) each
        _write_all(session, _STARTED_WRITE[with_project], params)
    # the reservation, counted (after the check against `quota`, if any) in this transaction
    quotas.reserve(session, [(binds[a.uuid].project_id or a.project_id, a.device_profile_id,
                              a.device_profile_group_id, a.state) for a in arqs], quota)
    return [a.uuid for a in arqs]


def _choose_devices(session: Session, arqs: list[ExtARQ], binds: dict[str, BindTarget],
                    exclude: frozenset[str]) -> dict[str, BindTarget]:
    """`binds` with a chosen deployable's host and RP for every standalone target. ARQs bound to
    the same host (or to any host) are chosen for together, in id order, so that the ARQs of one
    request never count the same free handle twice."""
    from rayborg.store import device_choice

    device_choice.lock_choices(session)
    chosen = dict(binds)
    by_host: dict[str | None, list[ExtARQ]] = {}
    for arq in arqs:  # in id order (lock_arqs)
        if binds[arq.uuid].standalone:
            by_host.setdefault(binds[arq.uuid].hostname, []).append(arq)
    # Handles this PATCH already heads for, per (host, RP): its ARQs with a named RP, then each pick.
    taken: dict[tuple[str, str], int] = {}
    for target in binds.values():
        if not target.standalone:
            key = (target.hostname, target.device_rp_uuid)
            taken[key] = taken.get(key, 0) + 1
    for host, group in sorted(by_host.items(), key=lambda item: item[0] is None):
        for choice in device_choice.choose(session, group, host=host, taken=taken, exclude=exclude):
            key = (choice.row["host"], choice.row["rp_uuid"])
            taken[key] = taken.get(key, 0) + 1
            target = binds[choice.arq_uuid]
            chosen[choice.arq_uuid] = BindTarget(choice.row["host"], choice.row["rp_uuid"], target.instance_uuid,
                                                 target.project_id)
    return chosen


def finish_bind(session: Session, arq_uuid: str) -> ARQState:
    """Claim an attach handle of the deployable behind the ARQ's RP: Bound, or BindFailed with
    `bind_error` when the RP is unknown on that host, the device is disabled (the error names it and
    its reason) or nothing is free.

    Raises NotFoundError if the ARQ is gone and StateConflict if it is no longer BindStarted (it was
    unbound or deleted meanwhile)."""
    return _finish_one(session, arq_uuid, hold=False)


def hold_handle(session: Session, arq_uuid: str) -> ARQState:
    """First half of a bind that has device work to do after the claim (an mdev to create): claim
    the handle as `finish_bind` does but leave the ARQ BindStarted, holding it. A binder that dies
    before the work is done finds the ARQ BindStarted again and resumes with the same handle, and
    Nova hears Bound only once the device exists. BindStarted (holding a handle; also when it held
    one already) or BindFailed; raises like `finish_bind`. `finish_bind` completes it."""
    return _finish_one(session, arq_uuid, hold=True)


def _finish_one(session: Session, arq_uuid: str, hold: bool) -> ARQState:
    outcome = _finish(session, [arq_uuid], hold=hold)[arq_uuid]
    if isinstance(outcome, StoreError):
        raise outcome
    return outcome


def finish_binds(session: Session, arq_uuids: list[str]) -> dict[str, str]:
    """`finish_bind` for many ARQs in one transaction (a binder's batch), with a handful of
    statements whatever their number; uuid -> Bound, BindFailed, or "abandoned" for an ARQ that is
    gone or no longer BindStarted (unbound or deleted meanwhile), which is left as it is."""
    return {u: "abandoned" if isinstance(o, StoreError) else str(o) for u, o in _finish(session, arq_uuids).items()}


_BIND_COLUMNS = (_arqs.c.id, _arqs.c.uuid, _arqs.c.state, _arqs.c.hostname, _arqs.c.device_rp_uuid,
                 _arqs.c.instance_uuid, _arqs.c.standalone, _arqs.c.attach_handle_id, _arqs.c.deployable_id,
                 _arqs.c.project_id, _arqs.c.device_profile_id, _arqs.c.device_profile_group_id)


def _finish(session: Session, arq_uuids: list[str], hold: bool = False) -> dict[str, ARQState | StoreError]:
    """Set-based bind completion: lock the ARQs, read their deployables in one query, claim handles
    per deployable, write Bound and BindFailed rows with one executemany each. An ARQ that already
    holds a handle (`hold_handle`) keeps it; with `hold` the claimed ARQs stay BindStarted."""
    rows = session.execute(_FINISH_ROWS, {"uuids": list(arq_uuids)}).all()
    out: dict[str, ARQState | StoreError] = {
        u: NotFoundError(f"Accelerator request not found: {u}") for u in arq_uuids}
    todo, bound, moved = [], [], []  # moved: quota counter changes (store/quotas.py)
    reached = S.BIND_STARTED if hold else S.BOUND

    def claimed(row, handle_id: int, deployable_id: int) -> None:
        bound.append({"b_id": row.id, "b_handle": handle_id, "b_dep": deployable_id,
                      "b_event": row.instance_uuid is not None and not hold})
        out[row.uuid] = reached
        moved.append((row.project_id, row.device_profile_id, row.device_profile_group_id, row.state, reached.value))

    for row in rows:
        if row.state in _FINISHABLE and row.attach_handle_id is not None:  # held: keep it
            claimed(row, row.attach_handle_id, row.deployable_id)
        elif row.state in _FINISHABLE:
            todo.append(row)
        else:
            out[row.uuid] = StateConflict(f"Cannot move accelerator requests to {S.BOUND}: "
                                          f"{row.uuid} is {row.state}")
    targets = [] if not todo else session.execute(
        _FINISH_TARGETS, {"rps": sorted({r.device_rp_uuid for r in todo if r.device_rp_uuid})}).all()
    by_target = {(rp, host): (dep_id, dep_uuid, dev_uuid, status)
                 for dep_id, dep_uuid, rp, host, dev_uuid, status, _ in targets}
    reasons = {dev_uuid: reason for *_, dev_uuid, _, reason in targets}
    failed: list[tuple[Any, str]] = []
    wanting: dict[tuple, list] = defaultdict(list)
    for row in todo:
        target = by_target.get((row.device_rp_uuid, row.hostname))
        if target is None:
            failed.append((row, f"No deployable with resource provider {row.device_rp_uuid} on host {row.hostname}"))
        elif target[3] == DeviceStatus.MAINTAINING.value:
            from rayborg.store.device_choice import disabled_error
            failed.append((row, disabled_error(target[2], reasons[target[2]])))
        else:
            wanting[target].append(row)
    handles = attach_handles.claim(session, {dep_id: len(waiting) for (dep_id, *_), waiting in wanting.items()})
    for (dep_id, dep_uuid, _, _), waiting in wanting.items():
        for row, handle_id in zip_longest(waiting, handles[dep_id]):
            if handle_id is None:
                failed.append((row, f"No free attach handle on deployable {dep_uuid}"))
            else:
                claimed(row, handle_id, dep_id)
    now = utcnow()
    if bound:
        _write_all(session, _CLAIMED_WRITE[reached], [{**b, "b_now": now} for b in bound])
    if failed:
        for row, error in failed:
            log.info("bind of ARQ %s failed: %s", row.uuid, error)
            out[row.uuid] = S.BIND_FAILED
        standalone_allocations.mark(session, [row.instance_uuid for row, _ in failed if row.standalone])
        _write_all(session, _FAILED_WRITE, [{"b_id": row.id, "b_error": error, "b_event": row.instance_uuid is not None,
                                             "b_now": now} for row, error in failed])
        moved += [(row.project_id, row.device_profile_id, row.device_profile_group_id, row.state,
                   S.BIND_FAILED.value) for row, _ in failed]
    quotas.move(session, moved)
    return out


# The bind completion's statements, built once (see _LOCK_BY_UUID).
_FINISH_ROWS = (select(*_BIND_COLUMNS).where(_arqs.c.uuid.in_(bindparam("uuids", expanding=True)))
                .order_by(_arqs.c.id).with_for_update())
_FINISH_TARGETS = (select(Deployable.id, Deployable.uuid, Deployable.rp_uuid, Device.hostname, Device.uuid,
                          Device.status, Device.status_reason)
                   .join(Device, Device.id == Deployable.device_id)
                   .where(Deployable.rp_uuid.in_(bindparam("rps", expanding=True))))
# (an OR of plain comparisons: an IN list would be an expanding parameter, which executemany refuses)
_STILL_STARTED = (_arqs.c.id == bindparam("b_id"), or_(*(_arqs.c.state == state for state in _FINISHABLE)))
_CLAIMED_WRITE = {  # the ARQ holds its handle: Bound, or (hold_handle) still BindStarted
    reached: update(_arqs).where(*_STILL_STARTED).values(
        state=reached.value, attach_handle_id=bindparam("b_handle"), deployable_id=bindparam("b_dep"),
        bind_error=None, nova_event_pending=bindparam("b_event"), updated_at=bindparam("b_now"))
    for reached in (S.BOUND, S.BIND_STARTED)}
_FAILED_WRITE = update(_arqs).where(*_STILL_STARTED).values(
    state=S.BIND_FAILED.value, bind_error=bindparam("b_error"), nova_event_pending=bindparam("b_event"),
    updated_at=bindparam("b_now"))


_STARTED_VALUES = {"state": S.BIND_STARTED.value, "hostname": bindparam("b_host"),
                   "device_rp_uuid": bindparam("b_rp"), "instance_uuid": bindparam("b_instance"),
                   "bind_error": None, "nova_event_pending": False, "standalone": bindparam("b_standalone"),
                   "updated_at": bindparam("b_now")}
_STARTED_WRITE = {  # start_bind's compare-and-set (Initial|Unbound -> BindStarted), with or without project_id
    with_project: update(_arqs).where(
        _arqs.c.id == bindparam("b_id"),
        or_(*(_arqs.c.state == state for state in sorted(s.value for s in TRANSITIONS[S.BIND_STARTED]))))
    .values(**_STARTED_VALUES, **({"project_id": bindparam("b_project")} if with_project else {}))
    for with_project in (False, True)}


def _write_all(session: Session, stmt, params: list[dict]) -> None:
    """One executemany of a compare-and-set UPDATE; every row must still have been in its source
    state (they are locked: anything else is a bug worth a loud failure, not a silent overwrite)."""
    result = session.execute(stmt, params)
    if result.rowcount != len(params):
        raise StateConflict(f"{len(params) - result.rowcount} accelerator requests changed state mid-bind")


def fail_bind(session: Session, arq_uuid: str, error: str) -> ARQState:
    """BindStarted|Bound -> BindFailed (e.g. programming failed), releasing a handle already claimed."""
    arq = lock_all(session, [arq_uuid], None)[0]
    _require_state([arq], S.BIND_FAILED)
    if arq.attach_handle_id is not None:
        attach_handles.release(session, arq.attach_handle_id)
    standalone_allocations.mark_arqs(session, [arq])
    _cas(session, arq.id, S.BIND_FAILED, attach_handle_id=None, deployable_id=None, bind_error=error,
         nova_event_pending=arq.instance_uuid is not None)
    quotas.move(session, [_quota_change(arq, S.BIND_FAILED)])
    return S.BIND_FAILED


def _quota_change(arq: Any, after: ARQState | None) -> tuple:
    """An ARQ's state change as `quotas.move` counts it (after None: deleted)."""
    return (arq.project_id, arq.device_profile_id, arq.device_profile_group_id, arq.state,
            "" if after is None else after.value)


_CLEARED = {"hostname": None, "device_rp_uuid": None, "instance_uuid": None, "attach_handle_id": None,
            "deployable_id": None, "nova_event_pending": False, "standalone": False}


def unbind_locked(session: Session, arqs: list[Any]) -> dict[str, ARQState]:
    """Release each ARQ's attach handle and clear where it was bound: Unbound, or UnbindFailed when
    its handle was not in use any more. All ARQs (rows the caller has locked: `lock_all`) are
    checked before anything changes."""
    _require_state(arqs, S.UNBOUND)
    standalone_allocations.mark_arqs(session, arqs)
    states: dict[str, ARQState] = {}
    for arq in arqs:
        if arq.attach_handle_id is not None and not attach_handles.release(session, arq.attach_handle_id):
            _cas(session, arq.id, S.UNBIND_FAILED, bind_error=f"Attach handle {arq.attach_handle_id} "
                                                              "was not in use", **_CLEARED)
            states[arq.uuid] = S.UNBIND_FAILED
            continue
        _cas(session, arq.id, S.UNBOUND, bind_error=None, **_CLEARED)
        states[arq.uuid] = S.UNBOUND
    quotas.move(session, [_quota_change(arq, states[arq.uuid]) for arq in arqs])
    return states


def delete_arqs(session: Session, arq_uuids: list[str] | None = None, instance_uuid: str | None = None,
                project_id: str | None = None, allow_bound: bool = True) -> list[str]:
    """Delete ARQs by uuid or by instance, releasing their attach handles first; the uuids that were
    not found (or not visible). `allow_bound=False` (no service token) refuses, before any change,
    when one of them is bound to an instance."""
    return delete_locked(session, lock_for_delete(session, arq_uuids, instance_uuid, project_id), arq_uuids,
                         allow_bound)


def lock_for_delete(session: Session, arq_uuids: list[str] | None, instance_uuid: str | None,
                    project_id: str | None) -> list[Any]:
    """The ARQs to delete, by uuid or (when `instance_uuid` is given) by instance, that `project_id`
    (None: any) may see, row-locked in id order."""
    if instance_uuid is None:
        return lock_arqs(session, arq_uuids or [], project_id)
    stmt = select(*_arqs.c).where(_arqs.c.instance_uuid == instance_uuid)
    return list(session.execute(visible_to(stmt, project_id).order_by(_arqs.c.id).with_for_update()))


def delete_locked(session: Session, arqs: list[Any], asked: list[str] | None, allow_bound: bool = True) -> list[str]:
    """`delete_arqs` of rows the caller has already locked (`lock_for_delete`); the uuids of `asked`
    that are not among them."""
    if not allow_bound:
        bound = next((a for a in arqs if a.instance_uuid), None)
        if bound is not None:
            raise ServiceTokenRequired(f"Accelerator request {bound.uuid} is bound to instance "
                                       f"{bound.instance_uuid}: deleting it requires a service token. "
                                       "Use the Compute API to manage instance accelerators.")
    standalone_allocations.mark_arqs(session, arqs)
    for arq in arqs:
        _cas(session, arq.id, S.DELETING)
        if arq.attach_handle_id is not None:
            attach_handles.release(session, arq.attach_handle_id)
        session.execute(_arqs.delete().where(_arqs.c.id == arq.id))
    quotas.move(session, [_quota_change(arq, None) for arq in arqs])
    found = {a.uuid for a in arqs}
    return [u for u in dict.fromkeys(asked or []) if u not in found]

"""Quota usage per project and resource class, and the quota check of a bind (the rocky
resource-quotas spec: `reserved` while a bind is in flight, `used` once it is done).

Usage is derived from the ARQ rows, not kept in a counter table: an ARQ in BindStarted is a
reservation, one in Bound is in use, and every other state holds nothing. The state changes that
reserve (start_bind), commit (Bound) and roll back (BindFailed, unbind, delete) are therefore the
usage changes themselves, in the same transactions, and no counter can drift from them.

The quota is counted at bind, not at ARQ create: an ARQ in Initial holds no device (Nova creates
ARQs before scheduling and may never bind them), and the spec reserves "when a new resource
allocation request comes" and commits when "the attachment is done". The check runs in the bind's
own transaction after its ARQs became BindStarted: on PostgreSQL under an advisory lock per project,
taken before the count, so that concurrent binds of one project are counted one after the other
(SQLite's write lock serialises them anyway); over the limit raises `QuotaExceeded` and the
transaction, with its state changes, is rolled back.

What an ARQ charges comes from its device-profile group: the group's `resources:RC` units in the
group's (sorted) order, one ARQ per unit, except a Xilinx FPGA, whose two ARQs (management and user
function) are one FPGA: the first charges it, the second nothing. The ARQs of one group fill these
slots in turn, so a group asking for one resource class (the usual case) is counted exactly.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from sqlalchemy import bindparam, func, select, text
from sqlmodel import Session

from rayborg.store import arq_state
from rayborg.store.errors import QuotaExceeded
from rayborg.store.tables import ARQState, DeviceProfile, ExtARQ

UNLIMITED = -1
_COUNTED = {ARQState.BIND_STARTED.value: "reserved", ARQState.BOUND.value: "used"}

_arqs = ExtARQ.__table__
_profiles = DeviceProfile.__table__
_COUNTS = (select(_arqs.c.project_id, _arqs.c.state, _arqs.c.device_profile_id,
                  _arqs.c.device_profile_group_id, func.count())
           .where(_arqs.c.state.in_(list(_COUNTED)))
           .group_by(_arqs.c.project_id, _arqs.c.state, _arqs.c.device_profile_id, _arqs.c.device_profile_group_id))
_COUNTS_OF = _COUNTS.where(_arqs.c.project_id.in_(bindparam("projects", expanding=True)))
_GROUPS = select(_profiles.c.id, _profiles.c.groups).where(_profiles.c.id.in_(bindparam("ids", expanding=True)))


@dataclass(frozen=True)
class Limits:
    """Limits per resource class (UNLIMITED: none); `per_class` overrides `default`. The noauth mode's
    `[quota]` settings table, or (keystone mode) what Keystone's unified limits say."""

    default: int = UNLIMITED
    per_class: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_table(cls, table: Mapping[str, int]) -> Limits:
        """From a `[quota]` table: `default` and one key per resource class."""
        return cls(default=table.get("default", UNLIMITED),
                   per_class={k: v for k, v in table.items() if k != "default"})

    @property
    def enforced(self) -> bool:
        """Whether any resource class has a limit (else a bind skips the check and its query)."""
        return self.default != UNLIMITED or any(v != UNLIMITED for v in self.per_class.values())

    def of(self, project_id: str, resource: str) -> int:
        return self.per_class.get(resource, self.default)


@dataclass(frozen=True)
class Usage:
    project_id: str
    resource: str
    used: int
    reserved: int


@lru_cache(maxsize=1024)
def _slots(group_items: tuple[tuple[str, str], ...]) -> tuple[tuple[str, int], ...]:
    """(resource class, units) charged by each ARQ of a group, in the order the group's ARQs fill them."""
    group = dict(group_items)
    slots: list[tuple[str, int]] = []
    for key, value in sorted(group.items()):
        if key.startswith("resources:") and value.isdigit():
            rc = key.removeprefix("resources:")
            slots += ([(rc, 1)] + [(rc, 0)] * (arq_state.per_unit(group, key) - 1)) * int(value)
    return tuple(slots)


def charge(group: dict[str, str], arqs: int) -> Counter:
    """Resource class -> units that `arqs` ARQs of `group` hold."""
    slots = _slots(tuple(sorted(group.items())))
    out: Counter = Counter()
    if not slots:
        return out
    rounds, rest = divmod(arqs, len(slots))
    for index, (rc, units) in enumerate(slots):
        out[rc] += units * (rounds + (index < rest))
    return out


def _groups(session: Session, profile_ids: Iterable[int]) -> dict[int, list[dict[str, str]]]:
    ids = sorted(set(profile_ids))
    return dict(session.execute(_GROUPS, {"ids": ids}).all()) if ids else {}


def _group(groups: dict[int, list[dict[str, str]]], profile_id: int, group_id: int) -> dict[str, str]:
    listed = groups.get(profile_id) or []
    return listed[group_id] if 0 <= group_id < len(listed) else {}


def _counts(session: Session, projects: list[str] | None) -> dict[tuple[str, int, int], Counter]:
    """(project, profile, group) -> state -> ARQs holding quota."""
    rows = (session.execute(_COUNTS).all() if projects is None
            else session.execute(_COUNTS_OF, {"projects": projects}).all())
    counts: dict[tuple[str, int, int], Counter] = defaultdict(Counter)
    for project, state, profile_id, group_id, n in rows:
        if project is not None:  # an ARQ without a project is charged to nobody
            counts[(project, profile_id, group_id)][state] = n
    return counts


def _charged(counts: dict[tuple[str, int, int], Counter], groups) -> dict[tuple[str, str], Counter]:
    """(project, resource class) -> {"used": n, "reserved": n}."""
    out: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for (project, profile_id, group_id), states in counts.items():
        group = _group(groups, profile_id, group_id)
        for state, n in states.items():
            for rc, units in charge(group, n).items():
                out[(project, rc)][_COUNTED[state]] += units
    return out


def usage(session: Session, project_id: str | None = None) -> list[Usage]:
    """What each project (only `project_id`, if given) holds, per resource class, sorted."""
    counts = _counts(session, None if project_id is None else [project_id])
    charged = _charged(counts, _groups(session, (p for _, p, _ in counts)))
    return [Usage(project, rc, c["used"], c["reserved"]) for (project, rc), c in sorted(charged.items())
            if c["used"] or c["reserved"]]


def lock_project(session: Session, project_id: str) -> None:
    """Serialise quota checks of one project until commit on PostgreSQL (SQLite: its write lock)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"rayborg:quota:{project_id}"})


def check_bind(session: Session, started: Iterable[tuple[str | None, int, int]], limits: Limits) -> None:
    """Refuse (QuotaExceeded) a bind that takes a project over a limit. `started` are (project,
    profile id, group index) of the ARQs this bind has just moved to BindStarted: they are part of
    the count already, so the usage before the bind is the count less what they charge."""
    if not limits.enforced:
        return
    mine: dict[str, Counter] = defaultdict(Counter)  # project -> (profile, group) -> ARQs of this bind
    for project, profile_id, group_id in started:
        if project is not None:
            mine[project][(profile_id, group_id)] += 1
    for project in sorted(mine):  # one lock order for every bind: no deadlock between two of them
        lock_project(session, project)
    counts = _counts(session, sorted(mine))
    groups = _groups(session, (p for _, p, _ in counts))
    for project, asked in sorted(mine.items()):
        after: Counter = Counter()
        before: Counter = Counter()
        for (owner, profile_id, group_id), states in counts.items():
            if owner != project:
                continue
            group = _group(groups, profile_id, group_id)
            held = sum(states.values())
            after.update(charge(group, held))
            before.update(charge(group, held - asked[(profile_id, group_id)]))
        for rc in sorted(after):
            limit = limits.of(project, rc)
            if limit != UNLIMITED and after[rc] > before[rc] and after[rc] > limit:
                raise QuotaExceeded(
                    f"Quota exceeded for resource {rc} of project {project}: limit {limit}, "
                    f"usage {before[rc]}, requested {after[rc] - before[rc]}")

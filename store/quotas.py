"""Quota usage per project and resource class, and the quota check of a bind (the rocky
resource-quotas spec: `reserved` while a bind is in flight, `used` once it is done).

Usage is kept in counter rows (`quota_usages`, `QuotaUsage`), changed by the same transactions as
the ARQ state changes that make it: `reserve` when a bind starts (Initial/Unbound -> BindStarted),
`move` when an ARQ leaves or enters BindStarted or Bound (Bound commits, BindFailed, unbind and
delete give back), one UPSERT statement per transaction whatever the number of ARQs. A counter row
is (project, device-profile group) -> ARQs reserved and used; `usage_from_rows` derives the same from
the ARQ rows, to check that they agree. (A count of the rows costs 130 us even with a covering index
at 1,200 ARQs held, and grows with them; reading a project's counters does not.)

The quota is counted at bind, not at ARQ create: an ARQ in Initial holds no device (Nova creates
ARQs before scheduling and may never bind them), and the spec reserves "when a new resource
allocation request comes" and commits when "the attachment is done". The check runs in the bind's
own transaction before its reservation is written: on PostgreSQL under an advisory lock per project,
so that concurrent binds of one project are counted one after the other (SQLite's write lock
serialises them anyway); over the limit raises `QuotaExceeded` and the transaction, with its state
changes, is rolled back.

What an ARQ charges comes from its device-profile group: the group's `resources:RC` units in the
group's (sorted) order, one ARQ per unit, except a Xilinx FPGA, whose two ARQs (management and user
function) are one FPGA: the first charges it, the second nothing. The ARQs of one group fill these
slots in turn, so a group asking for one resource class (the usual case) is counted exactly.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from sqlalchemy import bindparam, func, or_, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from rayborg.store import arq_state
from rayborg.store.errors import QuotaExceeded
from rayborg.store.prepared import Prepared, RawReader
from rayborg.store.tables import ARQState, DeviceProfile, ExtARQ, QuotaUsage

UNLIMITED = -1
_COUNTED = {ARQState.BIND_STARTED.value: "reserved", ARQState.BOUND.value: "used"}

_arqs = ExtARQ.__table__
_profiles = DeviceProfile.__table__
_usages = QuotaUsage.__table__
_HELD_BY = (_arqs.c.project_id, _arqs.c.device_profile_id, _arqs.c.device_profile_group_id, _arqs.c.state)
_COUNTS = (select(*_HELD_BY, func.count())
           .where(_arqs.c.state.in_(list(_COUNTED)), _arqs.c.project_id.is_not(None))
           .group_by(*_HELD_BY))
_COUNTERS = (select(_usages.c.project_id, _usages.c.device_profile_id, _usages.c.device_profile_group_id,
                    _usages.c.used, _usages.c.reserved, _profiles.c.groups)
             .outerjoin(_profiles, _profiles.c.id == _usages.c.device_profile_id)
             .where(or_(_usages.c.used != 0, _usages.c.reserved != 0)))
_COUNTERS_OF = _COUNTERS.where(_usages.c.project_id.in_(bindparam("projects", expanding=True)))

# The bind's check runs these on the transaction's own DBAPI connection (`_reader`): through the
# ORM session each cost about 100 us of CPU, most of it SQLAlchemy's, on a ~400 us bind.
_COUNTERS_OF_ONE = Prepared(_COUNTERS.where(_usages.c.project_id == bindparam("project")))
_GROUPS_OF_ONE = Prepared(select(_profiles.c.id, _profiles.c.groups).where(_profiles.c.id == bindparam("id")))
_PROJECT_LOCK = Prepared(select(func.pg_advisory_xact_lock(func.hashtext(bindparam("key")))))

Key = tuple[str, int, int]  # (project, device profile id, group index)


@dataclass(frozen=True)
class Limits:
    """Limits per resource class (UNLIMITED: none); `per_class` overrides `default`. The noauth mode's
    `[quota]` settings table, or (keystone mode) what Keystone's unified limits say."""

    default: int = UNLIMITED
    per_class: Mapping[str, int] = field(default_factory=dict)
    # project -> resource class -> limit, overriding the two above (Keystone's unified limits:
    # `api/quota_limits.py`); called in the bind's transaction, so it should answer from a cache.
    per_project: Callable[[str], Mapping[str, int]] | None = None

    @classmethod
    def from_table(cls, table: Mapping[str, int]) -> Limits:
        """From a `[quota]` table: `default` and one key per resource class."""
        return cls(default=table.get("default", UNLIMITED),
                   per_class={k: v for k, v in table.items() if k != "default"})

    @property
    def enforced(self) -> bool:
        """Whether any resource class has a limit (else a bind skips the check and its query)."""
        return (self.per_project is not None or self.default != UNLIMITED
                or any(v != UNLIMITED for v in self.per_class.values()))

    def of(self, project_id: str, resource: str) -> int:
        if self.per_project is not None and resource in (own := self.per_project(project_id)):
            return own[resource]
        return self.per_class.get(resource, self.default)

    def classes(self, project_id: str) -> list[str]:
        """The resource classes with a limit of their own for this project."""
        own = self.per_project(project_id) if self.per_project is not None else {}
        return sorted({*self.per_class, *own})


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


def _group(groups: list[dict[str, str]] | None, group_id: int) -> dict[str, str]:
    listed = groups or []
    return listed[group_id] if 0 <= group_id < len(listed) else {}


@lru_cache(maxsize=2)
def _upsert(dialect: str):
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(_usages)
    return stmt.on_conflict_do_update(
        index_elements=[_usages.c.project_id, _usages.c.device_profile_id, _usages.c.device_profile_group_id],
        set_={"used": _usages.c.used + stmt.excluded.used,
              "reserved": _usages.c.reserved + stmt.excluded.reserved})


def move(session: Session, changes: Iterable[tuple[str | None, int, int, str, str]]) -> None:
    """Keep the counters in line with ARQs changing state, in the caller's transaction: `changes`
    are (project, profile id, group index, state before, state after) of each ARQ (a deleted one:
    after = ""). One UPSERT statement for all of them, rows in key order (no deadlock between two
    transactions); ARQs without a project are charged to nobody."""
    deltas: dict[Key, list[int]] = defaultdict(lambda: [0, 0])
    for project, profile_id, group_id, before, after in changes:
        if project is None or before == after:
            continue
        delta = deltas[(project, profile_id, group_id)]
        for state, sign in ((before, -1), (after, 1)):
            if state == ARQState.BOUND:
                delta[0] += sign
            elif state == ARQState.BIND_STARTED:
                delta[1] += sign
    kept = session.info.get(_DEFERRED)
    if kept is not None:  # a shared transaction: counted once, at its end (flush_moves)
        for key, (u, r) in deltas.items():
            total = kept.setdefault(key, [0, 0])
            total[0] += u
            total[1] += r
        return
    _upsert_deltas(session, deltas)


def _upsert_deltas(session: Session, deltas: Mapping[Key, list[int]]) -> None:
    session.info.pop(_READ, None)  # the counter rows change: what `check` read of them is old
    params = [{"project_id": p, "device_profile_id": d, "device_profile_group_id": g,
               "used": u, "reserved": r}
              for (p, d, g), (u, r) in sorted(deltas.items()) if u or r]
    if params:
        session.execute(_upsert(session.get_bind().dialect.name), params)


# Counter changes of a transaction shared by many calls (the front door's group commit,
# `store/engine.py`), written by one UPSERT just before it commits: the counter rows are the hottest
# rows of a bind burst (every bind of a project and profile group changes the same one), and a row
# changed early in a transaction stays locked, keeping every other writer of it waiting, until the
# commit. Reads of the counters (`check`, `usage`, `counters`) write what is kept first.
_DEFERRED = "rayborg.quotas.deferred"


def defer_moves(session: Session) -> None:
    """From now on `move` keeps this transaction's counter changes until `flush_moves`."""
    session.info.setdefault(_DEFERRED, {})


def kept_moves(session: Session) -> dict | None:
    """A copy of the changes kept so far (to restore when a savepoint is rolled back)."""
    kept = session.info.get(_DEFERRED)
    return None if kept is None else {key: list(v) for key, v in kept.items()}


def restore_moves(session: Session, copy: dict | None) -> None:
    if copy is not None:
        session.info[_DEFERRED] = copy
        session.info.pop(_READ, None)  # a rolled-back savepoint may have written counters `check` read


# What `check` read of a project's counter rows in this transaction, under the project's lock:
# project -> ({(profile, group): used + reserved}, {profile: groups}). Until the counters are written
# (`_upsert_deltas`) or a savepoint is rolled back, only this transaction changes them, and those
# changes are the kept ones (`_DEFERRED`): the binds of a group-commit transaction are checked
# against one read per project instead of writing the counters and reading them back each time.
_READ = "rayborg.quotas.read"


def flush_moves(session: Session) -> None:
    """Write the kept counter changes (one UPSERT, rows in key order); later ones are kept again."""
    kept = session.info.get(_DEFERRED)
    if kept:
        session.info[_DEFERRED] = {}
        _upsert_deltas(session, kept)


def _charged(rows) -> dict[tuple[str, str], Counter]:
    """(project, resource class) -> {"used": n, "reserved": n} of counter rows (or the same from ARQs)."""
    out: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for project, _, group_id, used, reserved, groups in rows:
        group = _group(groups, group_id)
        for kind, n in (("used", used), ("reserved", reserved)):
            for rc, units in charge(group, n).items():
                out[(project, rc)][kind] += units
    return out


def _listed(charged: dict[tuple[str, str], Counter]) -> list[Usage]:
    return [Usage(project, rc, c["used"], c["reserved"]) for (project, rc), c in sorted(charged.items())
            if c["used"] or c["reserved"]]


def usage(session: Session, project_id: str | None = None) -> list[Usage]:
    """What each project (only `project_id`, if given) holds, per resource class, sorted: the counters."""
    flush_moves(session)
    rows = (session.execute(_COUNTERS).all() if project_id is None
            else session.execute(_COUNTERS_OF, {"projects": [project_id]}).all())
    return _listed(_charged(rows))


def counters(session: Session) -> dict[Key, tuple[int, int]]:
    """The counter rows that are not zero: (project, profile, group) -> (used, reserved)."""
    flush_moves(session)
    return {(p, d, g): (u, r) for p, d, g, u, r, _ in session.execute(_COUNTERS)}


def counters_from_rows(session: Session) -> dict[Key, tuple[int, int]]:
    """What the counters should be, counted from the ARQ rows (a check: `counters` must equal it)."""
    out: dict[Key, list[int]] = defaultdict(lambda: [0, 0])
    for project, profile_id, group_id, state, n in session.execute(_COUNTS):
        out[(project, profile_id, group_id)][state != ARQState.BOUND] = n
    return {k: (u, r) for k, (u, r) in out.items()}


def _reader(session: Session) -> RawReader:
    """Prepared statements on the DBAPI connection of the session's transaction (it sees, and is
    part of, what the transaction did so far)."""
    return RawReader(session.connection().connection, session.get_bind().dialect)


def lock_project(session: Session, project_id: str, reader: RawReader | None = None) -> None:
    """Serialise quota checks of one project until commit on PostgreSQL (SQLite: its write lock)."""
    if session.get_bind().dialect.name == "postgresql":
        (reader or _reader(session)).all(_PROJECT_LOCK, key=f"rayborg:quota:{project_id}")


def reserve(session: Session, started: Iterable[tuple[str | None, int, int, str]],
            limits: Limits | None) -> None:
    """A bind starts: `started` are (project, profile id, group index, state before) of the ARQs it
    moves to BindStarted. With `limits`, refuse (QuotaExceeded, before anything is counted) a bind
    that takes a project over a limit; then count the reservation."""
    started = list(started)
    if limits is not None and limits.enforced:
        check(session, [(p, d, g) for p, d, g, _ in started], limits)
    move(session, [(p, d, g, before, ARQState.BIND_STARTED.value) for p, d, g, before in started])


def check(session: Session, started: Iterable[tuple[str | None, int, int]], limits: Limits) -> None:
    """Refuse (QuotaExceeded) a bind that takes a project over a limit. `started` are (project,
    profile id, group index) of the ARQs the bind is about to move to BindStarted (not yet counted)."""
    mine: dict[str, Counter] = defaultdict(Counter)  # project -> (profile, group) -> ARQs of this bind
    for project, profile_id, group_id in started:
        if project is not None:
            mine[project][(profile_id, group_id)] += 1
    if not mine:
        return
    read = session.info.setdefault(_READ, {})
    reader = None
    for project in sorted(mine):  # one lock order for every bind: no deadlock between two of them
        if project not in read:
            reader = reader or _reader(session)
            lock_project(session, project, reader)
            rows = reader.all(_COUNTERS_OF_ONE, project=project)
            read[project] = ({(d, g): used + reserved for _, d, g, used, reserved, _ in rows},
                             {d: listed for _, d, _, _, _, listed in rows})
    held: dict[Key, int] = {}
    groups: dict[int, list[dict[str, str]] | None] = {}
    for project in sorted(mine):
        stored, listed = read[project]
        held.update({(project, d, g): n for (d, g), n in stored.items()})
        groups.update(listed)
    for (project, d, g), (used, reserved) in (session.info.get(_DEFERRED) or {}).items():
        if project in mine:  # this transaction's earlier calls, not written yet
            held[(project, d, g)] = held.get((project, d, g), 0) + used + reserved
    for profile_id in sorted({d for asked in mine.values() for d, _ in asked} - set(groups)):
        reader = reader or _reader(session)
        groups.update(fetched := dict(reader.all(_GROUPS_OF_ONE, id=profile_id)))
        for project in mine:
            read[project][1].update(fetched)
    for project, asked in sorted(mine.items()):
        after: Counter = Counter()
        before: Counter = Counter()
        for (owner, profile_id, group_id), n in held.items():
            if owner == project and (profile_id, group_id) not in asked:
                group = _group(groups.get(profile_id), group_id)
                after.update(charge(group, n))
                before.update(charge(group, n))
        for (profile_id, group_id), n in asked.items():
            group = _group(groups.get(profile_id), group_id)
            had = held.get((project, profile_id, group_id), 0)
            after.update(charge(group, had + n))
            before.update(charge(group, had))
        for rc in sorted(after):
            limit = limits.of(project, rc)
            if limit != UNLIMITED and after[rc] > before[rc] and after[rc] > limit:
                raise QuotaExceeded(
                    f"Quota exceeded for resource {rc} of project {project}: limit {limit}, "
                    f"usage {before[rc]}, requested {after[rc] - before[rc]}")


def report(session: Session, limits: Limits, project_id: str | None = None) -> list[dict]:
    """What GET /v2/quotas/usage, `rayborg quota` and `Rayborg.quota` show: one item (project,
    resource, used, reserved, limit) per (project, resource class) held (only `project_id`'s, if
    given), plus, for one project, every class with a limit of its own that it holds nothing of."""
    items = {(u.project_id, u.resource): (u.used, u.reserved) for u in usage(session, project_id)}
    if project_id is not None:
        for resource in limits.classes(project_id):
            items.setdefault((project_id, resource), (0, 0))
    return [{"project_id": project, "resource": resource, "used": used, "reserved": reserved,
             "limit": limits.of(project, resource)}
            for (project, resource), (used, reserved) in sorted(items.items())]

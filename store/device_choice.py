"""Which free deployables match a device-profile group, and on which host: the device choice of a
standalone allocation (no Nova, no Placement scheduler).

One caller: `arq_state.start_bind`, for a bind PATCH that leaves out `/device_rp_uuid` (and maybe
`/hostname`) and for the Python API's `rayborg.claim` (`store/claims.py`), which is the same
standalone bind; it chooses here, inside its own transaction, before the ARQs become BindStarted.

A group matches a deployable when the deployable's resource class (`rc` attribute) is one the
group asks for (`resources:<RC>`), it has every `trait:<T>=required` trait and none of the
`trait:<T>=forbidden` ones. Only deployables of enabled devices on hosts that are up and that still
have a free attach handle are candidates (when nothing else matches, the refusal names the matching
disabled devices and the reasons they were disabled for); handles already promised to ARQs in BindStarted (their
handle not claimed yet) are not free. Picks are first fit, in (host,
deployable name) order, and each pick takes one handle off the candidate before the next ARQ.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, text
from sqlmodel import Session, select

from rayborg.store.errors import ConflictError
from rayborg.store.tables import (
    ARQState,
    AttachHandle,
    Attribute,
    Deployable,
    Device,
    DeviceProfile,
    DeviceStatus,
    ExtARQ,
    Host,
    HostState,
)

USABLE_STATES = ("free", "bound")  # `state` of a deployable row that can take one more ARQ


class NoMatchingDevice(ConflictError):
    """No free deployable matches what an ARQ's profile group asks for (on the host asked)."""

    def __init__(self, arq_uuid: str, profile: str, group_id: int, resource_class: str | None,
                 required: set[str], forbidden: set[str], host: str | None,
                 disabled: Iterable[tuple[str, str | None]] = ()):
        self.disabled = list(dict.fromkeys(disabled))  # (device uuid, reason) of matching disabled devices
        self.arq_uuid = arq_uuid
        self.profile = profile
        self.group_id = group_id
        self.resource_class = resource_class
        self.required = set(required)
        self.forbidden = set(forbidden)
        self.host = host
        what = f"resource class {resource_class}" if resource_class else "no resources"
        if required:
            what += f", required traits {', '.join(sorted(required))}"
        if forbidden:
            what += f", forbidden traits {', '.join(sorted(forbidden))}"
        where = f"on host {host}" if host else "on any host"
        why = ""
        if self.disabled:
            why = "; matching but disabled: " + ", ".join(disabled_error(dev, reason, short=True)
                                                           for dev, reason in self.disabled)
        super().__init__(f"No free deployable for accelerator request {arq_uuid} (device profile {profile!r}, "
                         f"group {group_id}: {what}) {where}{why}")


def disabled_error(device_uuid: str, reason: str | None, short: bool = False) -> str:
    """Why a bind may not use a disabled device: the device and the reason its disable gave."""
    because = f" ({reason})" if reason else " (no reason given)"
    return f"device {device_uuid}{because}" if short else f"Device {device_uuid} is disabled{because}"


def requirements(group: dict[str, str]) -> tuple[list[str], set[str], set[str]]:
    """One resource class per accelerator the group asks for, plus required/forbidden traits."""
    units: list[str] = []
    for key, value in sorted(group.items()):
        if key.startswith("resources:"):
            units += [key.removeprefix("resources:")] * int(value)
    required = {
        k.removeprefix("trait:") for k, v in group.items() if k.startswith("trait:") and v == "required"
    }
    forbidden = {
        k.removeprefix("trait:") for k, v in group.items() if k.startswith("trait:") and v == "forbidden"
    }
    return units, required, forbidden


def matches(row: dict[str, Any], resource_class: str, required: set[str], forbidden: set[str]) -> bool:
    traits = set(row["traits"])
    return row["resource_class"] == resource_class and required <= traits and not forbidden & traits


def deployable_rows(session: Session, host: str | None = None) -> list[dict[str, Any]]:
    """Every deployable (of `host` only, if given) with its device, host state, resource class,
    traits, handle counts and the Bound ARQs holding it; ordered by host, then deployable name."""
    from rayborg.store.placement_state import desired_traits

    hosts = {h.hostname: h.state for h in session.exec(select(Host))}
    on_host = select(Deployable.id).join(Device, Device.id == Deployable.device_id)
    if host is not None:
        on_host = on_host.where(Device.hostname == host)
    attr_stmt = select(Attribute)
    handle_stmt = select(AttachHandle.deployable_id, AttachHandle.in_use, func.count())
    holder_stmt = select(ExtARQ).where(ExtARQ.deployable_id.is_not(None), ExtARQ.state == ARQState.BOUND.value)
    if host is not None:
        attr_stmt = attr_stmt.where(Attribute.deployable_id.in_(on_host))
        handle_stmt = handle_stmt.where(AttachHandle.deployable_id.in_(on_host))
        holder_stmt = holder_stmt.where(ExtARQ.deployable_id.in_(on_host))
    attrs: dict[int, dict[str, str]] = defaultdict(dict)
    for a in session.exec(attr_stmt):
        attrs[a.deployable_id][a.key] = a.value
    handles: dict[int, Counter] = defaultdict(Counter)
    for dep_id, in_use, n in session.exec(handle_stmt.group_by(AttachHandle.deployable_id, AttachHandle.in_use)):
        handles[dep_id]["used" if in_use else "free"] += n
    holders: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for arq in session.exec(holder_stmt):
        holders[arq.deployable_id].append(
            {"arq": arq.uuid, "consumer": arq.instance_uuid, "project_id": arq.project_id}
        )
    stmt = select(Deployable, Device).join(Device, Device.id == Deployable.device_id)
    if host is not None:
        stmt = stmt.where(Device.hostname == host)
    rows = []
    for dep, dev in session.exec(stmt.order_by(Device.hostname, Deployable.name)):
        a = attrs.get(dep.id, {})
        used, free = handles[dep.id]["used"], handles[dep.id]["free"]
        host_state = hosts.get(dev.hostname, HostState.UP.value)
        if host_state == HostState.LOST.value:
            state = "lost"
        elif dev.status == DeviceStatus.MAINTAINING.value:
            state = "disabled"
        elif used:
            state = "bound"
        else:
            state = "free"
        rows.append(
            {
                "deployable": dep.name,
                "deployable_uuid": dep.uuid,
                "device_uuid": dev.uuid,
                "host": dev.hostname,
                "family": dev.type,
                "vendor": dev.vendor,
                "model": dev.model,
                "resource_class": a.get("rc"),
                "traits": desired_traits(a),
                "driver": dep.driver_name,
                "rp_uuid": dep.rp_uuid,
                "bitstream_id": dep.bitstream_id,
                "status": dev.status,
                "status_reason": dev.status_reason,
                "host_state": host_state,
                "state": state,
                "handles": used + free,
                "in_use": used,
                "free": free,
                "holders": holders.get(dep.id, []),
                "stats": dev.stats or {},  # the device's driver counters (its host's last report)
            }
        )
    return rows


def promised_handles(session: Session, host: str | None = None) -> Counter:
    """(host, rp uuid) -> how many ARQs in BindStarted are headed there without a handle yet: each
    will claim one of that deployable's free handles when its binder gets to it."""
    stmt = (select(ExtARQ.hostname, ExtARQ.device_rp_uuid, func.count())
            .where(ExtARQ.state == ARQState.BIND_STARTED.value, ExtARQ.attach_handle_id.is_(None),
                   ExtARQ.device_rp_uuid.is_not(None))
            .group_by(ExtARQ.hostname, ExtARQ.device_rp_uuid))
    if host is not None:
        stmt = stmt.where(ExtARQ.hostname == host)
    return Counter({(h, rp): n for h, rp, n in session.exec(stmt)})


def lock_choices(session: Session) -> None:
    """Serialise device choices until commit on PostgreSQL, so that two concurrent choices never
    count the same free handle (SQLite's BEGIN IMMEDIATE write lock does this already)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext('rayborg:device-choice'))"))


@dataclass
class Choice:
    """The deployable chosen for one ARQ, and what of its group it fills."""

    arq_uuid: str
    row: dict[str, Any]
    resource_class: str
    group: dict[str, str] = field(default_factory=dict)


def choose(session: Session, arqs: Iterable[ExtARQ], host: str | None = None, exclude: Iterable[str] = (),
           taken: dict[tuple[str, str], int] | None = None) -> list[Choice]:
    """A free matching deployable for each ARQ (in the order given), all or nothing; raises
    `NoMatchingDevice` for the first ARQ left without one. Nothing is written.

    `exclude` lists RP uuids not to pick; handles promised to BindStarted ARQs count as taken, and
    `taken` ((host, RP uuid) -> count) names more handles spoken for by the caller already. An
    ARQ's resource class is the next of its group's `resources:` units, cycling over the ARQs of
    the same group in the order given."""
    arqs = list(arqs)
    profiles = {pid: session.get(DeviceProfile, pid) for pid in {a.device_profile_id for a in arqs}}
    exclude = set(exclude)
    promised = promised_handles(session, host)
    promised.update(taken or {})
    rows, disabled = [], []
    for r in deployable_rows(session, host):
        if promised:
            r["free"] = max(0, r["free"] - promised[(r["host"], r["rp_uuid"])])
        if r["state"] in USABLE_STATES and r["free"] > 0 and r["rp_uuid"] not in exclude:
            rows.append(r)
        elif r["state"] == "disabled":
            disabled.append(r)  # never chosen; named when only they would have matched
    choices: list[Choice] = []
    next_unit: Counter = Counter()
    for arq in arqs:
        profile = profiles[arq.device_profile_id]
        groups = profile.groups if profile is not None else []
        gid = arq.device_profile_group_id
        group = groups[gid] if 0 <= gid < len(groups) else {}
        units, required, forbidden = requirements(group)
        key = (arq.device_profile_id, gid)
        rc = units[next_unit[key] % len(units)] if units else None
        next_unit[key] += 1
        row = None if rc is None else next(
            (r for r in rows if r["free"] > 0 and matches(r, rc, required, forbidden)), None)
        if row is None:
            off = [] if rc is None else [(r["device_uuid"], r["status_reason"]) for r in disabled
                                         if matches(r, rc, required, forbidden)]
            raise NoMatchingDevice(arq.uuid, profile.name if profile is not None else "?", gid, rc,
                                   required, forbidden, host, off)
        row["free"] -= 1
        choices.append(Choice(arq.uuid, row, rc, group))
    return choices

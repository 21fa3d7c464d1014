"""Apply a host's `HostReport` to the store: the device tree of that host becomes what the drivers
found, in one transaction. Only PlacementSync calls this (it is the single writer of the tree).

Rows are matched by stable identity (device key, deployable name, attach-handle info) so that
uuids survive re-reports. Deployables whose Placement view changed are marked dirty; removed ones
leave a tombstone so that their RP is deleted from Placement even if that has to wait.

Two things a report does not simply overwrite: a stub device (its management stack is not loaded)
is neither added nor changed nor removed, as upstream's conductor diff skips stubs; and the loaded
bitstream, which most drivers cannot read back after a restart, is kept unless the driver reads
something else (`_with_loaded`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sqlmodel import Session, delete, select

from rayborg.drivers.base import DriverDeployable, DriverDevice, HostReport
from rayborg.store.hosts import upsert_host
from rayborg.store.placement_marks import mark_host_dirty
from rayborg.store.placement_state import provider_uuid
from rayborg.store.tables import (AttachHandle, Attribute, ControlPathID, Deployable, Device, HostState,
                                  PlacementTombstone, utcnow)

_DRIVER_KEY = re.compile(r"^(rc|trait\d+)$")
_TRAIT_KEY = re.compile(r"^trait\d+$")
# The trait of the function a bitstream loads (upstream's FPGA_TRAITS prefix, every vendor's spelling).
FUNCTION_TRAIT_PREFIX = "CUSTOM_FPGA_FUNCTION_ID_"


@dataclass
class ReportDiff:
    hostname: str
    added: list[str] = field(default_factory=list)      # deployable names
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    devices_removed: int = 0

    @property
    def empty(self) -> bool:
        return not (self.added or self.changed or self.removed or self.devices_removed)


def _flatten(dep: DriverDeployable, parent: DriverDeployable | None = None):
    yield dep, parent
    for child in dep.children:
        yield from _flatten(child, dep)


@dataclass
class _HostRows:
    """The host's stored tree, read in one query per table: a report of N devices then costs a
    few queries instead of four per device (a batch of programmings re-reports hosts many times)."""

    cpids: dict[int, ControlPathID]
    deployables: dict[int, dict[str, Deployable]]
    attributes: dict[int, list[Attribute]]
    handles: dict[int, list[AttachHandle]]

    @classmethod
    def load(cls, session: Session, hostname: str) -> _HostRows:
        def of_host(table, *joins):
            query = select(table)
            for target, on in joins:
                query = query.join(target, on)
            return session.exec(query.where(Device.hostname == hostname).order_by(table.id))

        via_device = (Device, Deployable.device_id == Device.id)
        rows = cls({}, {}, {}, {})
        for cpid in of_host(ControlPathID, (Device, ControlPathID.device_id == Device.id)):
            rows.cpids.setdefault(cpid.device_id, cpid)
        for dep in of_host(Deployable, via_device):
            rows.deployables.setdefault(dep.device_id, {})[dep.name] = dep
        for attr in of_host(Attribute, (Deployable, Attribute.deployable_id == Deployable.id), via_device):
            rows.attributes.setdefault(attr.deployable_id, []).append(attr)
        for handle in of_host(AttachHandle, (Deployable, AttachHandle.deployable_id == Deployable.id), via_device):
            rows.handles.setdefault(handle.deployable_id, []).append(handle)
        return rows


def apply_report(session: Session, report: HostReport) -> ReportDiff:
    diff = ReportDiff(report.hostname)
    host = upsert_host(session, report.hostname)
    if host.state == HostState.LOST.value:  # back: its devices' inventory is no longer reserved
        mark_host_dirty(session, report.hostname)
    host.report_hash, host.reported_at, host.state = report.content_hash, utcnow(), HostState.UP.value

    existing = {d.std_board_info_key: d for d in
                session.exec(select(Device).where(Device.hostname == report.hostname))}
    stored = _HostRows.load(session, report.hostname)
    for reported in report.devices:
        device = existing.pop(reported.key, None)
        if reported.stub:  # not schedulable: never stored, and a stored one is left as it was
            continue
        _apply_device(session, report.hostname, reported, device, stored, diff)
    for gone in existing.values():
        for dep in stored.deployables.get(gone.id, {}).values():
            _tombstone(session, dep, report.hostname, diff)
        session.delete(gone)
        diff.devices_removed += 1
    session.flush()
    return diff


def _tombstone(session: Session, dep: Deployable, hostname: str, diff: ReportDiff) -> None:
    diff.removed.append(dep.name)
    if dep.rp_uuid and not session.exec(
            select(PlacementTombstone).where(PlacementTombstone.rp_uuid == dep.rp_uuid)).first():
        session.add(PlacementTombstone(rp_uuid=dep.rp_uuid, hostname=hostname))


def _apply_device(session: Session, hostname: str, reported: DriverDevice, device: Device | None,
                  stored: _HostRows, diff: ReportDiff) -> None:
    fields = {"type": reported.type, "vendor": reported.vendor, "model": reported.model,
              "std_board_info": reported.std_board_info_json(),
              "vendor_board_info": reported.vendor_board_info}
    if device is None:
        device = Device(hostname=hostname, std_board_info_key=reported.key, **fields)
        session.add(device)
        session.flush()
    elif any(getattr(device, k) != v for k, v in fields.items()):
        for k, v in fields.items():
            setattr(device, k, v)
        device.updated_at = utcnow()
    stats = reported.stats or None  # the driver's counters: kept, but neither dirty nor "updated"
    if device.stats != stats:
        device.stats = stats

    cpid = stored.cpids.get(device.id)
    cpid_info = reported.controlpath_id.info_json()
    if cpid is None:
        cpid = ControlPathID(device_id=device.id, cpid_type=reported.controlpath_id.cpid_type,
                             cpid_info=cpid_info)
        session.add(cpid)
        session.flush()
    elif (cpid.cpid_type, cpid.cpid_info) != (reported.controlpath_id.cpid_type, cpid_info):
        cpid.cpid_type, cpid.cpid_info = reported.controlpath_id.cpid_type, cpid_info

    existing = dict(stored.deployables.get(device.id, {}))
    ids: dict[str, int] = {}
    for top in reported.deployables:
        for dep, parent in _flatten(top):
            row = existing.pop(dep.name, None)
            row = _apply_deployable(session, device.id, dep, row, stored, diff)
            ids[dep.name] = row.id
            row.parent_id = ids[parent.name] if parent else None
            row.root_id = ids[top.name]
    for gone in existing.values():
        _tombstone(session, gone, hostname, diff)
        session.delete(gone)


def _with_loaded(dep: DriverDeployable, row: Deployable, attributes: list[Attribute]) -> DriverDeployable:
    """The report as it should be applied, with what was programmed kept: sysfs seldom says which
    bitstream is loaded (Inspur never, Intel/Xilinx only a function id at best) and a driver forgets
    what it programmed when its process restarts. A driver that reports no bitstream keeps the stored
    one and its function trait, unless it reads another function on the device; one that reports a
    bitstream id wins."""
    if dep.bitstream_id is not None or row.bitstream_id is None:
        return dep
    stored = [a.value for a in attributes if _TRAIT_KEY.match(a.key) and a.value.startswith(FUNCTION_TRAIT_PREFIX)]
    reported = [t for t in dep.traits if t.startswith(FUNCTION_TRAIT_PREFIX)]
    if reported and set(reported) != set(stored):
        return dep
    return DriverDeployable.model_validate(dep.model_dump() | {
        "bitstream_id": row.bitstream_id, "traits": dep.traits + [t for t in stored if t not in dep.traits]})


def _apply_deployable(session: Session, device_id: int, dep: DriverDeployable, row: Deployable | None,
                      stored: _HostRows, diff: ReportDiff) -> Deployable:
    if row is not None:
        dep = _with_loaded(dep, row, stored.attributes.get(row.id, []))
    if row is None:
        row = Deployable(name=dep.name, device_id=device_id, num_accelerators=dep.num_accelerators,
                         driver_name=dep.driver_name, bitstream_id=dep.bitstream_id,
                         rp_uuid=provider_uuid(dep.name), placement_dirty=True)
        session.add(row)
        session.flush()
        diff.added.append(dep.name)
    else:
        before = (row.num_accelerators, row.driver_name, row.bitstream_id)
        after = (dep.num_accelerators, dep.driver_name, dep.bitstream_id)
        if before != after:
            row.num_accelerators, row.driver_name, row.bitstream_id = after
            row.placement_dirty, row.updated_at = True, utcnow()
            diff.changed.append(dep.name)
    if _apply_attributes(session, row.id, stored.attributes.get(row.id, []), dep.attributes) \
            and dep.name not in diff.added:
        row.placement_dirty = True
        if dep.name not in diff.changed:
            diff.changed.append(dep.name)
    _apply_handles(session, row.id, stored.handles.get(row.id, []), dep)
    return row


def _apply_attributes(session: Session, deployable_id: int, rows: list[Attribute],
                      reported: dict[str, str]) -> bool:
    """Driver-owned keys (`rc`, `traitN` and whatever the driver reports) follow the report;
    the operator's rows (source "operator", written through the attribute API) are left alone, and
    win over the driver's value for the same key. True when something changed."""
    by_key = {r.key: r for r in rows}
    changed = False
    for key, value in reported.items():
        row = by_key.get(key)
        if row is None:
            session.add(Attribute(deployable_id=deployable_id, key=key, value=value))
            changed = True
        elif row.source != "operator" and row.value != value:
            row.value, row.updated_at = value, utcnow()
            changed = True
    for row in rows:
        if row.source != "operator" and _DRIVER_KEY.match(row.key) and row.key not in reported:
            session.delete(row)
            changed = True
    return changed


def _apply_handles(session: Session, deployable_id: int, stored: list[AttachHandle], dep: DriverDeployable) -> None:
    rows = {(r.attach_type, r.attach_info): r for r in stored}
    for handle in dep.attach_handles:
        key = (handle.attach_type, handle.info_json())
        if rows.pop(key, None) is None:
            session.add(AttachHandle(deployable_id=deployable_id, attach_type=handle.attach_type,
                                     attach_info=handle.info_json()))
    # Gone from the host: drop free handles; one still claimed stays until its ARQ lets go.
    stale = [r.id for r in rows.values() if not r.in_use]
    if stale:
        session.exec(delete(AttachHandle).where(AttachHandle.id.in_(stale)))


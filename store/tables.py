"""SQLModel tables: the device tree (Stein model and later), device profiles and extended ARQs.

The schema itself is created and changed only by the Alembic migrations in `store/migrations/`;
these classes are what the code reads and writes. Integer `id`s are internal but leak into a few
API fields (`device_id`, `parent_id`, `root_id`, `deployable_id`) exactly as upstream Cyborg does.
"""

from __future__ import annotations

import uuid as uuidlib
from datetime import datetime, timezone
from enum import StrEnum

from sqlalchemy import JSON, Column, DateTime, ForeignKey, Index, Integer, UniqueConstraint, false
from sqlmodel import Field, SQLModel


# Every constraint gets a predictable name on both databases, so that later migrations can drop or
# alter it by name (SQLite batch mode cannot address an unnamed constraint).
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_uuid() -> str:
    return str(uuidlib.uuid4())


class ARQState(StrEnum):
    """Wire strings of the ARQ states, exactly as Cyborg and Nova spell them."""

    INITIAL = "Initial"
    BIND_STARTED = "BindStarted"
    BOUND = "Bound"
    BIND_FAILED = "BindFailed"
    UNBOUND = "Unbound"
    UNBIND_FAILED = "UnbindFailed"
    DELETING = "Deleting"


class DeviceStatus(StrEnum):
    ENABLED = "enabled"
    MAINTAINING = "maintaining"


class TimestampMixin(SQLModel):
    created_at: datetime = Field(default_factory=utcnow, sa_column_kwargs={"nullable": False},
                                 sa_type=DateTime(timezone=True))
    updated_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class HostState(StrEnum):
    UP = "up"
    LOST = "lost"  # its Ray node left: devices kept, nothing new binds there


class Host(TimestampMixin, table=True):
    """A host that reported devices, and where its Placement sync stands."""

    __tablename__ = "hosts"

    id: int | None = Field(default=None, primary_key=True)
    hostname: str = Field(max_length=255, unique=True, index=True)
    state: str = Field(default=HostState.UP.value, max_length=20)
    report_hash: str | None = Field(default=None, max_length=64)
    reported_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    compute_rp_uuid: str | None = Field(default=None, max_length=36)
    # Last Placement error for this host (None when in sync), for `rayborg status` and operators.
    sync_error: str | None = Field(default=None)


class Device(TimestampMixin, table=True):
    """A physical card on a host, found by a driver."""

    __tablename__ = "devices"
    __table_args__ = (UniqueConstraint("hostname", "std_board_info_key", name="uq_device_host_board"),)

    id: int | None = Field(default=None, primary_key=True)
    uuid: str = Field(default_factory=new_uuid, unique=True, index=True, max_length=36)
    type: str = Field(max_length=30)
    vendor: str = Field(max_length=255)
    model: str = Field(max_length=255)
    std_board_info: str = Field(default="{}")
    vendor_board_info: str = Field(default="")
    hostname: str = Field(max_length=255, index=True)
    status: str = Field(default=DeviceStatus.ENABLED.value, max_length=20)
    # Why an operator disabled the device (None while enabled), shown with its status.
    status_reason: str | None = Field(default=None, max_length=255)
    # The driver's counters from the last host report (`Driver.get_stats`), None when it has none.
    stats: dict | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    # Stable identity of the card on its host (driver name + PCI address or serial), so that a
    # re-report updates the same row instead of creating a new uuid.
    std_board_info_key: str = Field(max_length=255)


class Deployable(TimestampMixin, table=True):
    """A schedulable unit of a device (card, FPGA region, PF); one nested Placement RP each."""

    __tablename__ = "deployables"

    id: int | None = Field(default=None, primary_key=True)
    uuid: str = Field(default_factory=new_uuid, unique=True, index=True, max_length=36)
    parent_id: int | None = Field(default=None, sa_column=Column(
        Integer, ForeignKey("deployables.id", ondelete="SET NULL"), nullable=True))
    root_id: int | None = Field(default=None, sa_column=Column(
        Integer, ForeignKey("deployables.id", ondelete="SET NULL"), nullable=True))
    name: str = Field(max_length=255)
    num_accelerators: int = Field(default=1)
    device_id: int = Field(sa_column=Column(Integer, ForeignKey("devices.id", ondelete="CASCADE"),
                                            nullable=False, index=True))
    driver_name: str | None = Field(default=None, max_length=100)
    rp_uuid: str | None = Field(default=None, max_length=36, index=True)
    bitstream_id: str | None = Field(default=None, max_length=36)
    # What PlacementSync last pushed for this deployable's RP (None: unknown, check Placement), and
    # whether the store changed since: a restart resumes from these instead of re-pushing everything.
    placement_state: dict | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    placement_dirty: bool = Field(default=True, index=True)


class ControlPathID(TimestampMixin, table=True):
    """How to reach a device for management (e.g. its PCI PF)."""

    __tablename__ = "controlpath_ids"

    id: int | None = Field(default=None, primary_key=True)
    uuid: str = Field(default_factory=new_uuid, unique=True, max_length=36)
    device_id: int = Field(sa_column=Column(Integer, ForeignKey("devices.id", ondelete="CASCADE"),
                                            nullable=False, index=True))
    cpid_type: str = Field(max_length=30)
    cpid_info: str = Field(max_length=255)


class AttachHandle(TimestampMixin, table=True):
    """What a VM attaches (a PCI function, an mdev); claimed by exactly one ARQ at a time."""

    __tablename__ = "attach_handles"
    __table_args__ = (Index("ix_attach_handles_free", "deployable_id", "in_use"),)

    id: int | None = Field(default=None, primary_key=True)
    uuid: str = Field(default_factory=new_uuid, unique=True, max_length=36)
    deployable_id: int = Field(sa_column=Column(
        Integer, ForeignKey("deployables.id", ondelete="CASCADE"), nullable=False))
    cpid_id: int | None = Field(default=None, sa_column=Column(
        Integer, ForeignKey("controlpath_ids.id", ondelete="SET NULL"), nullable=True))
    in_use: bool = Field(default=False)
    attach_type: str = Field(max_length=30)
    attach_info: str = Field(default="{}")


class Attribute(TimestampMixin, table=True):
    """Key/value facts about a deployable (`rc`, `trait<N>`, operator-defined keys)."""

    __tablename__ = "attributes"
    __table_args__ = (UniqueConstraint("deployable_id", "key", name="uq_attribute_deployable_key"),)

    id: int | None = Field(default=None, primary_key=True)
    uuid: str = Field(default_factory=new_uuid, unique=True, index=True, max_length=36)
    deployable_id: int = Field(sa_column=Column(
        Integer, ForeignKey("deployables.id", ondelete="CASCADE"), nullable=False, index=True))
    key: str = Field(max_length=255)
    value: str = Field(max_length=255)
    # "driver" rows are rewritten by every host report; "operator" rows (the attribute API) win over them.
    source: str = Field(default="driver", max_length=16, sa_column_kwargs={"server_default": "driver"})


class DeviceProfile(TimestampMixin, table=True):
    """A named, immutable list of request groups ("a flavor for devices")."""

    __tablename__ = "device_profiles"

    id: int | None = Field(default=None, primary_key=True)
    uuid: str = Field(default_factory=new_uuid, unique=True, index=True, max_length=36)
    name: str = Field(max_length=255, unique=True, index=True)
    description: str | None = Field(default=None, max_length=255)
    groups: list[dict[str, str]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    project_id: str | None = Field(default=None, max_length=255)


class ExtARQ(TimestampMixin, table=True):
    """An accelerator request plus what only rayborg needs to finish binding it."""

    __tablename__ = "extended_accelerator_requests"

    id: int | None = Field(default=None, primary_key=True)
    uuid: str = Field(default_factory=new_uuid, unique=True, index=True, max_length=36)
    state: str = Field(default=ARQState.INITIAL.value, max_length=20, index=True)
    device_profile_id: int = Field(sa_column=Column(
        Integer, ForeignKey("device_profiles.id", ondelete="RESTRICT"), nullable=False))
    device_profile_group_id: int = Field(default=0)
    hostname: str | None = Field(default=None, max_length=255)
    device_rp_uuid: str | None = Field(default=None, max_length=36)
    instance_uuid: str | None = Field(default=None, max_length=36, index=True)
    project_id: str | None = Field(default=None, max_length=255, index=True)
    attach_handle_id: int | None = Field(default=None, sa_column=Column(
        Integer, ForeignKey("attach_handles.id", ondelete="SET NULL"), nullable=True, unique=True))
    deployable_id: int | None = Field(default=None, sa_column=Column(
        Integer, ForeignKey("deployables.id", ondelete="SET NULL"), nullable=True))
    # Why a bind failed, for operators (not part of Cyborg's wire format).
    bind_error: str | None = Field(default=None)
    # A Nova `accelerator-request-bound` event is owed for this ARQ and not yet delivered.
    nova_event_pending: bool = Field(default=False, index=True)
    # rayborg chose the device (a standalone bind, no Nova): the Placement allocation of its
    # consumer is rayborg's to make and to remove (`store/standalone_allocations.py`).
    standalone: bool = Field(default=False, sa_column_kwargs={"server_default": false()})


class PlacementTombstone(SQLModel, table=True):
    """A device RP whose deployable is gone from the store but not yet from Placement."""

    __tablename__ = "placement_tombstones"

    id: int | None = Field(default=None, primary_key=True)
    rp_uuid: str = Field(max_length=36, unique=True)
    hostname: str = Field(max_length=255)


class StandaloneAllocation(SQLModel, table=True):
    """What rayborg allocated in Placement for one consumer of standalone binds, and whether that
    still has to be brought in line with the consumer's ARQs (an outbox: the change is recorded in
    the same transaction as the bind/unbind/delete, and pushed by the consumer's binder)."""

    __tablename__ = "standalone_allocations"

    id: int | None = Field(default=None, primary_key=True)
    consumer: str = Field(max_length=36, unique=True)
    dirty: bool = Field(default=True, index=True)
    version: int = Field(default=0)  # bumped at every change, so a push never clears a newer one
    pushed: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))  # rp -> rc -> n
    updated_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class ProgramRequest(TimestampMixin, table=True):
    """A request to program a bitstream onto a deployable, recorded before the host acts on it."""

    __tablename__ = "program_requests"

    id: int | None = Field(default=None, primary_key=True)
    uuid: str = Field(default_factory=new_uuid, unique=True, max_length=36)
    deployable_id: int = Field(sa_column=Column(
        Integer, ForeignKey("deployables.id", ondelete="CASCADE"), nullable=False, index=True))
    image_uuid: str = Field(max_length=36)
    state: str = Field(default="requested", max_length=20)  # requested|programming|done|failed
    error: str | None = Field(default=None)
    project_id: str | None = Field(default=None, max_length=255)


class DaemonLease(SQLModel, table=True):
    """The one `rayborg serve` of this database, and where the CLI and the Python API find it
    (`store/daemon_lease.py`). A single row: a second daemon reads it and refuses to start."""

    __tablename__ = "daemon_lease"

    name: str = Field(primary_key=True, max_length=16)  # always "daemon"
    owner: str = Field(max_length=36)  # random per serve: a heartbeat that finds another has lost it
    hostname: str = Field(max_length=255)
    # Where `pid` means something (boot id and pid namespace), and the process's start time there,
    # so that the same machine tells a dead daemon (killed -9) at once, even when its pid is reused.
    machine: str = Field(max_length=255)
    pid: int
    process_start: str = Field(max_length=32)
    api_host: str = Field(max_length=255)
    api_port: int
    ray_address: str | None = Field(default=None, max_length=255)  # GCS host:port; None: --no-actors
    dashboard_url: str | None = Field(default=None, max_length=255)
    database_url: str  # as the daemon opened it, password hidden
    started_at: float  # Unix time, the daemon's clock
    heartbeat_at: float  # other machines take the lease over when this is older than LEASE_SECONDS


class QuotaUsage(SQLModel, table=True):
    """Quota usage counters (the rocky resource-quotas spec's `quota_usages`): a project's ARQs of one
    device-profile group that hold quota, `reserved` (BindStarted) and `used` (Bound), kept by the
    same transactions as the ARQ state changes (`store/quotas.py`). Counted per profile group, not
    per resource class, because what an ARQ charges depends on how many of its group are held (a
    Xilinx FPGA is two ARQs and one FPGA); `store/quotas.py` turns them into units per class."""

    __tablename__ = "quota_usages"

    project_id: str = Field(primary_key=True, max_length=255)
    device_profile_id: int = Field(primary_key=True)  # no foreign key: a zero row never blocks a delete
    device_profile_group_id: int = Field(primary_key=True)
    used: int = Field(default=0)
    reserved: int = Field(default=0)

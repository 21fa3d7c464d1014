"""What each deployable's resource provider should look like in Placement, derived from the store.

The one home of the naming rules every side shares: a device RP's uuid (from its name, so a restart
finds it again) and its traits (the driver's `traitN` attributes plus Cyborg's owner trait).
"""

from __future__ import annotations

import re
import uuid as uuidlib
from dataclasses import dataclass

from sqlmodel import Session, select

from rayborg.store.tables import Attribute, Deployable, Device, DeviceStatus, Host, HostState

# Cyborg marks every device RP it owns with this trait (os-traits' OWNER_CYBORG).
OWNER_CYBORG = "OWNER_CYBORG"

_TRAIT_KEY = re.compile(r"trait\d+")


@dataclass(frozen=True)
class ProviderState:
    """What one device RP should look like (or was last pushed as)."""

    uuid: str
    name: str
    parent_uuid: str
    resource_class: str
    total: int
    reserved: int
    traits: tuple[str, ...]

    def as_dict(self) -> dict:
        return {"uuid": self.uuid, "name": self.name, "parent_uuid": self.parent_uuid,
                "resource_class": self.resource_class, "total": self.total, "reserved": self.reserved,
                "traits": list(self.traits)}

    @classmethod
    def from_dict(cls, d: dict) -> ProviderState:
        return cls(uuid=d["uuid"], name=d["name"], parent_uuid=d["parent_uuid"],
                   resource_class=d["resource_class"], total=int(d["total"]), reserved=int(d["reserved"]),
                   traits=tuple(d["traits"]))


def provider_uuid(name: str) -> str:
    """Device RP uuids derive from their (globally unique) names, so a restart finds them again."""
    return str(uuidlib.uuid3(uuidlib.NAMESPACE_DNS, name))


def desired_traits(attributes: dict[str, str]) -> list[str]:
    """A deployable's traits: its `traitN` attributes and OWNER_CYBORG, sorted, once each."""
    traits = [v for k, v in sorted(attributes.items()) if _TRAIT_KEY.fullmatch(k)]
    return sorted({OWNER_CYBORG, *traits})


def attributes_of(session: Session, deployable_id: int) -> dict[str, str]:
    return {a.key: a.value for a in
            session.exec(select(Attribute).where(Attribute.deployable_id == deployable_id))}


def parent_ids(session: Session, dep_ids: list[int]) -> dict[int, int | None]:
    """deployable id -> its parent deployable's id (None for a root): the push creates parents first."""
    if not dep_ids:
        return {}
    return dict(session.exec(select(Deployable.id, Deployable.parent_id).where(Deployable.id.in_(dep_ids))).all())


def desired_state(session: Session, dep: Deployable, device: Device, parent_uuid: str) -> ProviderState:
    """A disabled (maintaining) device, or one of a lost host, reserves its whole inventory so nothing
    new lands on it. A root deployable's RP hangs under `parent_uuid` (the compute node); a nested
    one (an FPGA's PR region) under its parent deployable's RP."""
    if dep.parent_id is not None:
        parent = session.get(Deployable, dep.parent_id)
        if parent is not None and parent.rp_uuid:
            parent_uuid = parent.rp_uuid
    attrs = attributes_of(session, dep.id)
    total = dep.num_accelerators
    lost = session.exec(select(Host.id).where(Host.hostname == device.hostname,
                                              Host.state == HostState.LOST.value)).first() is not None
    reserved = total if lost or device.status == DeviceStatus.MAINTAINING.value else 0
    return ProviderState(uuid=dep.rp_uuid, name=dep.name, parent_uuid=parent_uuid,
                         resource_class=attrs.get("rc", "FPGA"), total=total, reserved=reserved,
                         traits=tuple(desired_traits(attrs)))

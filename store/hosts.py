"""Host rows: created by a host's first report, marked lost when its Ray node leaves, and told which
Placement compute node their devices nest under."""

from __future__ import annotations

from sqlmodel import Session, select

from rayborg.store.placement_marks import mark_host_dirty
from rayborg.store.tables import Host, HostState


def upsert_host(session: Session, hostname: str) -> Host:
    host = session.exec(select(Host).where(Host.hostname == hostname)).first()
    if host is None:
        host = Host(hostname=hostname)
        session.add(host)
    return host


def mark_lost(session: Session, hostname: str) -> None:
    """Its Ray node left: the devices are kept, but nothing new binds there (nor lands there through
    Placement: the next push reserves their inventory)."""
    host = upsert_host(session, hostname)
    if host.state != HostState.LOST.value:
        host.state = HostState.LOST.value
        mark_host_dirty(session, hostname)


def hostnames_up(session: Session) -> list[str]:
    """Hosts that reported and were not seen leaving."""
    return list(session.exec(select(Host.hostname).where(Host.state == HostState.UP.value)))


def record_compute_node(session: Session, hostname: str, rp_uuid: str | None) -> None:
    """The compute node RP found in Placement for `hostname` (None: none yet, said in sync_error)."""
    host = session.exec(select(Host).where(Host.hostname == hostname)).first()
    if host is not None:
        host.compute_rp_uuid = rp_uuid
        host.sync_error = None if rp_uuid else f"no compute node named {hostname} in Placement"

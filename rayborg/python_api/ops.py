"""Store-side operations of the Python API and the operator CLI, run inside a Binder actor.

A program anywhere on the Ray cluster reaches the store through `Binder.op(name, **kwargs)`: the
binders sit where the database is reachable (the head, with SQLite), so the caller needs neither the
database URL nor network access to it. Reads are one query; `claim`/`release` are the standalone
allocation (no Nova): choose free matching deployables, bind ARQs through the state machine in one
transaction, and record the allocation in Placement as a consumer.

Claims are ARQs bound to a *consumer* uuid (stored where Nova's instance uuid goes, with no Nova
event owed). The consumer uuid carries the Ray job that claimed (`JJJJJJJJ-c1a1-4...`), so the
reaper on binder 0 releases the claims of jobs that ended, even across restarts of every actor.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid as uuidlib
from collections import Counter, defaultdict
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, select

log = logging.getLogger("rayborg.claims")

CLAIM_MARK = "c1a1"  # second group of a standalone claim's consumer uuid
CLAIM_RE = re.compile(rf"^([0-9a-f]{{8}})-{CLAIM_MARK}-4[0-9a-f]{{3}}-8[0-9a-f]{{3}}-[0-9a-f]{{12}}$")
NO_JOB = "00000000"
CONSUMER_TYPE = "RAYBORG"
REAP_INTERVAL = 2.0
PLACEMENT_ATTEMPTS = 3

OPS: dict[str, Any] = {}


def op(fn):
    OPS[fn.__name__] = fn
    return fn


class ClaimError(Exception):
    """A claim that cannot be satisfied (no matching free device, Placement refused, ...)."""


class _Retry(Exception):
    """A handle pick lost a race inside the transaction: roll back and pick again."""


async def run(binder, name: str, **kwargs) -> Any:
    fn = OPS.get(name)
    if fn is None:
        raise ValueError(f"unknown operation {name!r} (known: {', '.join(sorted(OPS))})")
    if asyncio.iscoroutinefunction(fn):
        return await fn(binder, **kwargs)
    return await asyncio.to_thread(fn, binder, **kwargs)


def consumer_uuid(job_id: str | None) -> str:
    job = (job_id or NO_JOB).lower()
    if not re.fullmatch(r"[0-9a-f]{8}", job):
        job = NO_JOB
    r = uuidlib.uuid4().hex
    return f"{job}-{CLAIM_MARK}-4{r[:3]}-8{r[3:6]}-{r[6:18]}"


def claim_job(consumer: str | None) -> str | None:
    """The Ray job id a claim's consumer uuid names (None: not a standalone claim, or no job)."""
    m = CLAIM_RE.match(consumer or "")
    return m.group(1) if m and m.group(1) != NO_JOB else None


def is_claim(consumer: str | None) -> bool:
    return bool(CLAIM_RE.match(consumer or ""))


def claim_fields(consumer: str, picked: dict[str, Any]) -> dict[str, Any]:
    """rayborg.logs fields of a claimed device: the consumer goes where Nova's instance would."""
    return {"instance": consumer, "arq": picked["arq"], "host": picked["host"],
            "deployable": picked["deployable"], "device": picked.get("device_uuid")}


# -- reads ---------------------------------------------------------------------------------------
@op
def config(binder) -> dict[str, Any]:
    from sqlalchemy.engine import make_url

    c = binder.config
    return {
        "database_url": make_url(c.database_url).render_as_string(hide_password=True),
        "placement_url": c.placement_url,
        "nova_url": c.nova_url,
        "binder_count": c.binder_count,
        "namespace": c.namespace,
    }


def _deployable_rows(session: Session) -> list[dict[str, Any]]:
    from rayborg.store.device_choice import deployable_rows

    rows = deployable_rows(session)
    _mark_claims(rows)
    return rows


def _mark_claims(rows: list[dict[str, Any]]) -> None:
    """Flag the holders that are standalone claims (not Nova instances)."""
    for row in rows:
        for holder in row["holders"]:
            holder["claim"] = is_claim(holder["consumer"])


@op
def deployables(binder) -> list[dict[str, Any]]:
    return binder.store.query(_deployable_rows)


@op
def arqs(binder, state: str | None = None, host: str | None = None) -> list[dict[str, Any]]:
    from rayborg.store.tables import Deployable, DeviceProfile, ExtARQ

    def q(session: Session):
        profiles = {p.id: p.name for p in session.exec(select(DeviceProfile))}
        deps = {d.id: d.name for d in session.exec(select(Deployable))}
        stmt = select(ExtARQ).order_by(ExtARQ.id)
        if state:
            stmt = stmt.where(ExtARQ.state == state)
        if host:
            stmt = stmt.where(ExtARQ.hostname == host)
        return [
            {
                "uuid": a.uuid,
                "state": a.state,
                "device_profile": profiles.get(a.device_profile_id),
                "group": a.device_profile_group_id,
                "host": a.hostname,
                "rp_uuid": a.device_rp_uuid,
                "instance_uuid": a.instance_uuid,
                "claim": is_claim(a.instance_uuid),
                "deployable": deps.get(a.deployable_id),
                "project_id": a.project_id,
                "bind_error": a.bind_error,
            }
            for a in session.exec(stmt)
        ]

    return binder.store.query(q)


@op
def summary(binder) -> dict[str, Any]:
    from rayborg.store.tables import Deployable, Device, ExtARQ, Host

    def q(session: Session):
        hosts = [
            {
                "hostname": h.hostname,
                "state": h.state,
                "reported_at": h.reported_at.isoformat() if h.reported_at else None,
                "compute_rp_uuid": h.compute_rp_uuid,
                "sync_error": h.sync_error,
            }
            for h in session.exec(select(Host).order_by(Host.hostname))
        ]
        families: dict[str, Counter] = defaultdict(Counter)
        for dtype, status, n in session.exec(
            select(Device.type, Device.status, func.count()).group_by(Device.type, Device.status)
        ):
            families[dtype][status] += n
            families[dtype]["total"] += n
        arq_states = dict(session.exec(select(ExtARQ.state, func.count()).group_by(ExtARQ.state)).all())
        dirty = session.exec(
            select(func.count()).select_from(Deployable).where(Deployable.placement_dirty == True)  # noqa: E712
        ).one()
        return {
            "hosts": hosts,
            "devices": {k: dict(v) for k, v in sorted(families.items())},
            "arqs": arq_states,
            "placement_dirty": dirty,
        }

    return binder.store.query(q)


# -- enable / disable ----------------------------------------------------------------------------
@op
async def set_device_status(binder, device: str, enabled: bool) -> dict[str, Any]:
    """Enable or disable a device given by its uuid, or by the name/uuid of one of its deployables."""
    import ray

    from rayborg.actors.runtime_config import NAMESPACE, PLACEMENT_SYNC_NAME
    from rayborg.store.queries.devices import set_device_status as set_status
    from rayborg.store.tables import Deployable, Device, DeviceStatus

    def change(session: Session):
        dev = session.exec(select(Device).where(Device.uuid == device)).first()
        if dev is None:
            dep = session.exec(
                select(Deployable).where((Deployable.name == device) | (Deployable.uuid == device))
            ).first()
            dev = session.get(Device, dep.device_id) if dep is not None else None
        if dev is None:
            raise LookupError(f"no device or deployable named {device!r}")
        status = DeviceStatus.ENABLED if enabled else DeviceStatus.MAINTAINING
        before = dev.status
        set_status(session, dev.uuid, status)
        return {
            "device_uuid": dev.uuid,
            "host": dev.hostname,
            "type": dev.type,
            "status": status.value,
            "changed": before != status.value,
        }

    result = await asyncio.to_thread(binder.store.transact, change)
    try:
        ray.get_actor(PLACEMENT_SYNC_NAME, namespace=NAMESPACE).nudge.remote()
    except ValueError:
        pass
    return result


# -- standalone claims ---------------------------------------------------------------------------
def _claim_txn(
    session: Session,
    profile: str,
    count: int,
    host: str | None,
    consumer: str,
    project_id: str | None,
    exclude: set[str],
    limits: Any,
) -> list[dict[str, Any]]:
    from rayborg.store import arq_state, bind_plan, device_choice
    from rayborg.store.errors import InvalidError
    from rayborg.store.tables import ARQState, DeviceProfile

    prof = session.exec(select(DeviceProfile).where(DeviceProfile.name == profile)).first()
    if prof is None:
        raise ClaimError(f"device profile {profile!r} not found")
    if count < 1:
        raise ClaimError(f"count must be at least 1, not {count}")
    try:  # the same bounds as a POST of the profile: per group, and on all the ARQs of the claim
        arqs = arq_state.create_arqs(session, profile, project_id, limits)
    except InvalidError as exc:
        raise ClaimError(str(exc)) from None
    if len(arqs) * count > limits.per_profile:
        raise ClaimError(f"{count} x profile {profile!r} is {len(arqs) * count} accelerators, more than the "
                         f"{limits.per_profile} one claim may ask for")
    for _ in range(count - 1):
        arqs += arq_state.create_arqs(session, profile, project_id)
    if not arqs:
        raise ClaimError(f"device profile {profile!r} asks for no resources")
    try:
        # The handle is claimed below, in this transaction: a lost race is a _Retry, not a promise.
        choices = device_choice.choose(
            session, arqs, {prof.id: prof}, host=host, exclude=exclude, count_promised=False
        )
    except device_choice.NoMatchingDevice as exc:
        where = f" on host {host}" if host else ""
        traits = f" with traits {sorted(exc.required)}" if exc.required else ""
        raise ClaimError(
            f"no free {exc.resource_class}{traits}{where} for profile {profile!r} "
            f"({len(arqs)} accelerators asked)"
        ) from None
    targets: dict[str, arq_state.BindTarget] = {}
    picked: dict[str, dict[str, Any]] = {}
    for choice in choices:
        row = choice.row
        targets[choice.arq_uuid] = arq_state.BindTarget(row["host"], row["rp_uuid"], consumer, project_id)
        picked[choice.arq_uuid] = {
            "arq": choice.arq_uuid,
            "host": row["host"],
            "rp_uuid": row["rp_uuid"],
            "resource_class": choice.resource_class,
            "deployable": row["deployable"],
            "deployable_uuid": row["deployable_uuid"],
            "device_uuid": row["device_uuid"],
            "driver": row["driver"],
            "bitstream_id": row["bitstream_id"],
            "wanted_bitstream": choice.group.get("accel:bitstream_id"),
        }
    arq_state.start_bind(session, targets, None)
    session.expire_all()  # start_bind wrote with core UPDATEs: reload the ARQs finish_bind locks
    for arq_uuid in targets:
        if arq_state.finish_bind(session, arq_uuid) != ARQState.BOUND:
            raise _Retry(arq_uuid)  # someone claimed the handle between our pick and our claim
    bind_plan.clear_events(session, list(targets))  # no Nova behind a standalone claim
    return list(picked.values())


def _release_txn(session: Session, consumer: str) -> list[str]:
    from rayborg.store import arq_state
    from rayborg.store.tables import ExtARQ

    uuids = [a.uuid for a in session.exec(select(ExtARQ).where(ExtARQ.instance_uuid == consumer))]
    arq_state.delete_arqs(session, instance_uuid=consumer)
    return uuids


def _allocate(
    client, consumer: str, picked: list[dict[str, Any]], project_id: str, user_id: str
) -> str | None:
    """PUT /allocations/{consumer}: None when Placement took it, else why not."""
    from rayborg.actors.placement_client import PlacementUnavailable

    allocations: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: {"resources": Counter()})
    for p in picked:
        allocations[p["rp_uuid"]]["resources"][p["resource_class"]] += 1
    body = {
        "allocations": {rp: {"resources": dict(a["resources"])} for rp, a in allocations.items()},
        "consumer_generation": None,
        "project_id": project_id,
        "user_id": user_id,
        "consumer_type": CONSUMER_TYPE,
    }
    try:
        resp = client._request("PUT", f"/allocations/{consumer}", body)
    except PlacementUnavailable as exc:
        raise ClaimError(f"Placement unavailable: {exc}") from None
    if resp.status_code == 204:
        return None
    return str(client._error(resp, f"allocate for consumer {consumer}"))


def _deallocate(client, consumer: str) -> None:
    resp = client._request("DELETE", f"/allocations/{consumer}")
    if resp.status_code not in (204, 404):
        raise ClaimError(str(client._error(resp, f"release consumer {consumer}")))


@op
async def claim(
    binder,
    profile: str,
    count: int = 1,
    host: str | None = None,
    job_id: str | None = None,
    project_id: str | None = None,
    user_id: str | None = None,
) -> dict[str, Any]:
    """Bind `count` x the profile's accelerators to a new consumer; all or nothing."""
    consumer = consumer_uuid(job_id)
    project_id = project_id or "rayborg"
    user_id = user_id or "rayborg"
    client = binder.placement
    exclude: set[str] = set()
    for attempt in range(PLACEMENT_ATTEMPTS):
        picked = await _claim_with_retries(binder, profile, count, host, consumer, project_id, exclude)
        if client is None:
            break
        why = await asyncio.to_thread(_allocate, client, consumer, picked, project_id, user_id)
        if why is None:
            break
        # Placement says those RPs are full (someone else's allocation, e.g. Nova's): give them
        # back and pick elsewhere.
        log.warning(
            "claim: Placement refused %s: %s",
            sorted({p["rp_uuid"] for p in picked}),
            why,
            extra={"instance": consumer},
        )
        await asyncio.to_thread(binder.store.transact, _release_txn, consumer)
        exclude |= {p["rp_uuid"] for p in picked}
    else:
        raise ClaimError(f"Placement refused the allocation {PLACEMENT_ATTEMPTS} times; last: {why}")
    try:
        await _program_claimed(picked)
    except ClaimError:
        await release(binder, consumer)
        raise
    for p in picked:
        log.info("claimed for profile %s", profile, extra=claim_fields(consumer, p))
    return {
        "consumer": consumer,
        "profile": profile,
        "count": count,
        "project_id": project_id,
        "user_id": user_id,
        "placement": client is not None,
        "devices": picked,
    }


async def _claim_with_retries(binder, profile, count, host, consumer, project_id, exclude):
    from rayborg.store.arq_state import AmountLimits

    limits = AmountLimits(binder.config.max_group_amount, binder.config.max_profile_amount)
    for _ in range(50):
        try:
            return await asyncio.to_thread(
                binder.store.transact, _claim_txn, profile, count, host, consumer, project_id, exclude, limits
            )
        except _Retry:
            await asyncio.sleep(0.01)
    raise ClaimError("could not claim attach handles: too much contention, try again")


async def _program_claimed(picked: list[dict[str, Any]]) -> None:
    """Load the profile's bitstream where the claimed deployable does not have it yet."""
    import ray

    from rayborg.actors.runtime_config import NAMESPACE, host_agent_name

    todo = [p for p in picked if p["wanted_bitstream"] and p["wanted_bitstream"] != p["bitstream_id"]]
    refs = []
    for p in {p["deployable"]: p for p in todo}.values():
        try:
            agent = ray.get_actor(host_agent_name(p["host"]), namespace=NAMESPACE)
        except ValueError:
            raise ClaimError(f"host {p['host']} has no agent to program {p['deployable']}") from None
        refs.append((p, agent.program.remote(p["driver"], p["deployable"], p["wanted_bitstream"])))
    for p, ref in refs:
        result = await ref
        if not result["ok"]:
            raise ClaimError(f"programming {p['deployable']} failed: {result['error']}")


@op
async def release(binder, consumer: str) -> dict[str, Any]:
    """Give a claim back: the Placement allocation first (so nothing is ever double-booked), then
    the ARQs and their attach handles. Idempotent."""
    client = binder.placement
    if client is not None:
        await asyncio.to_thread(_deallocate, client, consumer)
    released = await asyncio.to_thread(binder.store.transact, _release_txn, consumer)
    for arq in released:
        log.info("claim released", extra={"instance": consumer, "arq": arq})
    return {"consumer": consumer, "released": released}


# -- bitstreams ----------------------------------------------------------------------------------
@op
def check_bitstream(binder, bitstream: str, hosts: list[str]) -> dict[str, str]:
    """host -> why its bitstream source has no usable `bitstream`, for the hosts whose source the
    binder can ask (Glance; each distinct one once). A local directory lives on its own host: only
    that host's agent can tell, when it programs."""
    from rayborg.drivers.bitstreams import GlanceBitstreams, bitstream_source

    out: dict[str, str] = {}
    answers: dict[str, str | None] = {}
    for host in hosts:
        cfg = binder.config.for_host(host)["options"].get("bitstreams") or {}
        key = repr(sorted(cfg.items()))
        if key not in answers:
            source = bitstream_source(dict(cfg))
            answers[key] = _glance_says(source, bitstream) if isinstance(source, GlanceBitstreams) else None
        if answers[key]:
            out[host] = answers[key]
    return out


def _glance_says(source, image_id: str) -> str | None:
    """Why Glance's image `image_id` is not a usable bitstream; None when it is or Glance cannot
    be asked from here (the agents will find out themselves)."""
    from keystoneauth1 import exceptions as ks_exc

    from rayborg.drivers.base import BitstreamError
    from rayborg.drivers.bitstreams import FPGA_TAG, parse_meta

    try:
        image = source.adapter.get(f"/v2/images/{image_id}").json()
    except ks_exc.NotFound:
        return f"bitstream image {image_id} does not exist in Glance"
    except (ks_exc.ClientException, ValueError) as exc:
        log.info("cannot check bitstream %s in Glance: %s", image_id, exc)
        return None
    if FPGA_TAG not in (image.get("tags") or []):
        return f"image {image_id} is not tagged {FPGA_TAG}"
    try:
        parse_meta(image, image_id=image_id)
    except BitstreamError as exc:
        return str(exc)
    return None


@op
def claims(binder) -> dict[str, list[str]]:
    """consumer -> ARQ uuids of every standalone claim."""
    from rayborg.store.tables import ExtARQ

    def q(session: Session):
        out: dict[str, list[str]] = defaultdict(list)
        for arq_uuid, consumer in session.exec(
            select(ExtARQ.uuid, ExtARQ.instance_uuid).where(
                ExtARQ.instance_uuid.like(f"________-{CLAIM_MARK}-%")
            )
        ):
            if is_claim(consumer):
                out[consumer].append(arq_uuid)
        return dict(out)

    return binder.store.query(q)


def _dead_jobs() -> set[str] | None:
    try:
        import ray._private.state as ray_state

        return {j["JobID"].lower() for j in ray_state.jobs() if j.get("IsDead")}
    except Exception as exc:  # noqa: BLE001 - no job table: keep the claims
        log.debug("job table unavailable: %s", exc)
        return None


@op
async def reap(binder) -> list[str]:
    """Release the claims whose Ray job has ended; the consumers released."""
    held = await asyncio.to_thread(claims, binder)
    jobs = {c: claim_job(c) for c in held}
    if not any(jobs.values()):
        return []
    dead = await asyncio.to_thread(_dead_jobs)
    if not dead:
        return []
    done = []
    for consumer, job in jobs.items():
        if job in dead:
            try:
                await release(binder, consumer)
                done.append(consumer)
                log.info("claim released: its Ray job %s ended", job, extra={"instance": consumer})
            except Exception as exc:  # noqa: BLE001 - next round
                log.warning(
                    "claim of ended job %s not released yet: %s", job, exc, extra={"instance": consumer}
                )
    return done


async def reap_loop(binder, interval: float = REAP_INTERVAL) -> None:
    while True:
        try:
            await reap(binder)
        except Exception:
            log.exception("claim reaper failed")
        await asyncio.sleep(interval)

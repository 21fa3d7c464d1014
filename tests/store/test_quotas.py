"""Quota usage counters kept by the ARQ state changes (reserved at bind start, used at Bound, given
back at BindFailed, unbind and delete), always equal to what the ARQ rows hold, and the quota's
enforcement at bind start, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import random
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from factories import add_device, add_profile
from rayborg.store import arq_state, bind_plan, quotas
from rayborg.store.arq_state import BindTarget
from rayborg.store.errors import QuotaExceeded, StoreError
from rayborg.store.quotas import Limits
from rayborg.store.tables import ARQState, DeviceProfile, ExtARQ


def create(store, profile: str, project: str) -> list[str]:
    return [a.uuid for a in store.transact(arq_state.create_arqs, profile, project)]


def start(store, arqs: list[str], tree, project: str, limits: Limits | None = None) -> list[str]:
    instance = str(uuid.uuid4())
    targets = {a: BindTarget("host1", tree.rp_uuids[0], instance, project) for a in arqs}
    return store.transact(arq_state.start_bind, targets, quota=limits)


def usage_of(store, project: str | None = None) -> dict[tuple[str, str], tuple[int, int]]:
    assert_counters_match_rows(store)
    return {(u.project_id, u.resource): (u.used, u.reserved) for u in store.query(quotas.usage, project)}


def assert_counters_match_rows(store) -> None:
    assert store.query(quotas.counters) == store.query(quotas.counters_from_rows)


@pytest.mark.parametrize("group,arqs,expected", [
    ({"resources:FPGA": "2"}, 3, {"FPGA": 3}),
    # a Xilinx FPGA is two ARQs (management and user function) but one FPGA
    ({"resources:FPGA": "1", "trait:CUSTOM_FPGA_XILINX": "required"}, 4, {"FPGA": 2}),
    ({"resources:FPGA": "1", "trait:CUSTOM_FPGA_XILINX": "required"}, 1, {"FPGA": 1}),
    ({"resources:FPGA": "1", "resources:PGPU": "2"}, 3, {"FPGA": 1, "PGPU": 2}),
    ({"trait:CUSTOM_X": "required"}, 2, {}),
])
def test_charge_per_group(group, arqs, expected):
    assert dict(quotas.charge(group, arqs)) == expected


def test_usage_follows_the_arq_states(store):
    tree = add_device(store, handles_per_deployable=8)
    add_profile(store, "fpga2", [{"resources:FPGA": "2"}])
    add_profile(store, "qat", [{"resources:CUSTOM_QAT": "1"}])
    add_profile(store, "xilinx", [{"resources:FPGA": "1", "trait:CUSTOM_FPGA_XILINX": "required"}])
    a = create(store, "fpga2", "pa")
    assert usage_of(store) == {}  # Initial holds nothing: counted at bind
    start(store, a, tree, "pa")
    assert usage_of(store) == {("pa", "FPGA"): (0, 2)}
    assert store.transact(arq_state.finish_binds, a) == {a[0]: "Bound", a[1]: "Bound"}
    assert usage_of(store) == {("pa", "FPGA"): (2, 0)}
    q = create(store, "qat", "pb")
    start(store, q, tree, "pb")
    assert usage_of(store) == {("pa", "FPGA"): (2, 0), ("pb", "CUSTOM_QAT"): (0, 1)}
    assert usage_of(store, "pb") == {("pb", "CUSTOM_QAT"): (0, 1)}
    store.transact(arq_state.fail_bind, q[0], "programming failed")  # rolled back
    assert usage_of(store, "pb") == {}
    store.transact(bind_plan.unbind_releasing, [a[0]], None)
    assert usage_of(store) == {("pa", "FPGA"): (1, 0)}
    store.transact(bind_plan.delete_releasing, [a[1]], None, None, True)
    assert usage_of(store) == {}
    h = create(store, "qat", "pb")  # a handle held first (device work to do), then Bound
    start(store, h, tree, "pb")
    assert store.transact(arq_state.hold_handle, h[0]) == ARQState.BIND_STARTED
    assert usage_of(store) == {("pb", "CUSTOM_QAT"): (0, 1)}
    assert store.transact(arq_state.finish_bind, h[0]) == ARQState.BOUND
    assert usage_of(store) == {("pb", "CUSTOM_QAT"): (1, 0)}
    store.transact(arq_state.fail_bind, h[0], "device lost")  # Bound -> BindFailed gives it back
    assert usage_of(store) == {}
    store.transact(bind_plan.unbind_releasing, h, None)  # BindFailed -> Unbound: nothing to give back
    start(store, h, tree, "pb")  # Unbound -> BindStarted reserves again
    store.transact(bind_plan.delete_releasing, h, None, None, True)
    assert usage_of(store) == {}
    x = create(store, "xilinx", "pb")  # two ARQs, one FPGA; a bind whose device is unknown fails
    start(store, x, tree, "pb")
    assert usage_of(store) == {("pb", "FPGA"): (0, 1)}
    store.transact(arq_state.fail_bind, x[1], "user function failed")
    assert usage_of(store) == {("pb", "FPGA"): (0, 1)}
    store.transact(arq_state.fail_bind, x[0], "management function failed")
    assert usage_of(store) == {}


def test_bind_over_quota_is_refused_and_changes_nothing(store):
    tree = add_device(store, handles_per_deployable=8)
    add_profile(store, "fpga", [{"resources:FPGA": "1"}])
    add_profile(store, "gpu", [{"resources:PGPU": "1"}])
    limits = Limits(default=-1, per_class={"FPGA": 1})
    first, second = create(store, "fpga", "pa"), create(store, "fpga", "pa")
    start(store, first, tree, "pa", limits)
    with pytest.raises(QuotaExceeded) as refused:
        start(store, second, tree, "pa", limits)
    message = str(refused.value)
    assert "resource FPGA" in message and "limit 1" in message and "usage 1" in message and "pa" in message
    states = {a.uuid: a.state for a in store.query(lambda s: list(s.scalars(select(ExtARQ))))}
    assert states[second[0]] == ARQState.INITIAL and states[first[0]] == ARQState.BIND_STARTED
    assert usage_of(store) == {("pa", "FPGA"): (0, 1)}
    start(store, create(store, "fpga", "pb"), tree, "pb", limits)  # another project has its own
    start(store, create(store, "gpu", "pa"), tree, "pa", limits)  # unlimited resource class
    store.transact(arq_state.fail_bind, first[0], "gone")  # a failed bind gives its unit back
    start(store, second, tree, "pa", limits)
    assert usage_of(store, "pa") == {("pa", "FPGA"): (0, 1), ("pa", "PGPU"): (0, 1)}


def test_default_limit_applies_to_every_class(store):
    tree = add_device(store, handles_per_deployable=8)
    add_profile(store, "qat2", [{"resources:CUSTOM_QAT": "2"}])
    with pytest.raises(QuotaExceeded, match="CUSTOM_QAT.*limit 1, usage 0, requested 2"):
        start(store, create(store, "qat2", "pa"), tree, "pa", Limits(default=1))
    assert usage_of(store) == {}


def test_fifty_clients_racing_for_the_last_units(store):
    tree = add_device(store, handles_per_deployable=8)
    add_profile(store, "fpga", [{"resources:FPGA": "1"}])
    limits = Limits(per_class={"FPGA": 3})
    arqs = [create(store, "fpga", "pa") for _ in range(50)]
    barrier = threading.Barrier(50)

    def race(mine: list[str]) -> bool:
        barrier.wait()
        try:
            start(store, mine, tree, "pa", limits)
            return True
        except QuotaExceeded:
            return False

    with ThreadPoolExecutor(50) as pool:
        won = sum(pool.map(race, arqs))
    assert won == 3
    assert usage_of(store) == {("pa", "FPGA"): (0, 3)}


async def test_binds_sharing_a_group_commit_transaction_never_pass_the_limit(store):
    """The front door's concurrent binds share transactions (Store.agroup_transact) and are checked
    against one read of the counters per project plus what the transaction kept so far: 40 binds of
    one project racing for 3 units, with a refused and a failing call among them, win exactly 3, and
    a project's second round in later transactions sees the first."""
    tree = add_device(store, handles_per_deployable=8)
    add_profile(store, "fpga", [{"resources:FPGA": "1"}])
    limits = Limits(per_class={"FPGA": 3})
    arqs = [create(store, "fpga", "pa") for _ in range(40)]

    def boom(session):
        raise RuntimeError("a call that fails in its savepoint")

    async def bind(mine: list[str]) -> bool:
        instance = str(uuid.uuid4())
        targets = {u: BindTarget("host1", tree.rp_uuids[0], instance, "pa") for u in mine}
        try:
            await store.agroup_transact(arq_state.start_bind, targets, quota=limits)
            return True
        except QuotaExceeded:
            return False

    async def failing() -> None:
        with pytest.raises(RuntimeError):
            await store.agroup_transact(boom)

    results = await asyncio.gather(*(bind(a) for a in arqs[:20]), failing(), *(bind(a) for a in arqs[20:]))
    assert sum(r for r in results if r is not None) == 3
    assert usage_of(store) == {("pa", "FPGA"): (0, 3)}
    assert_counters_match_rows(store)
    more = [create(store, "fpga", "pa") for _ in range(5)]
    assert not any(await asyncio.gather(*(bind(a) for a in more)))


def test_usage_equals_bound_plus_in_flight_after_a_concurrent_mix(store):
    tree = add_device(store, deployables=2, handles_per_deployable=40)
    add_profile(store, "fpga", [{"resources:FPGA": "1"}])
    add_profile(store, "gpu2", [{"resources:PGPU": "2"}])
    classes = {"fpga": "FPGA", "gpu2": "PGPU"}
    projects = ["pa", "pb", "pc"]
    seeds = iter(range(1000))

    def worker(_: int) -> None:
        rng = random.Random(next(seeds))
        for _ in range(6):
            project, profile = rng.choice(projects), rng.choice(list(classes))
            arqs = create(store, profile, project)
            try:
                start(store, arqs, tree, project)
                step = rng.choice(["finish", "fail", "unbind", "delete", "keep"])
                if step == "finish":
                    store.transact(arq_state.finish_binds, arqs)
                elif step == "fail":
                    store.transact(arq_state.fail_bind, arqs[0], "failed")
                elif step == "unbind":
                    store.transact(arq_state.finish_binds, arqs)
                    store.transact(bind_plan.unbind_releasing, arqs, project)
                elif step == "delete":
                    store.transact(bind_plan.delete_releasing, arqs, None, project, True)
            except StoreError:
                pass

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(worker, range(8)))
    held = select(ExtARQ.project_id, ExtARQ.state, ExtARQ.device_profile_id)
    rows = store.query(lambda s: list(s.execute(held)))
    profile_class = {pid: classes[name] for pid, name in store.query(
        lambda s: list(s.execute(select(DeviceProfile.id, DeviceProfile.name))))}
    expected: Counter = Counter()
    for project, state, profile_id in rows:
        if state == ARQState.BOUND:
            expected[(project, profile_class[profile_id], "used")] += 1
        elif state == ARQState.BIND_STARTED:
            expected[(project, profile_class[profile_id], "reserved")] += 1
    assert any(state == ARQState.BOUND for _, state, _ in rows)
    got: Counter = Counter()
    for u in store.query(quotas.usage):
        got[(u.project_id, u.resource, "used")] += u.used
        got[(u.project_id, u.resource, "reserved")] += u.reserved
    assert +got == +expected
    assert_counters_match_rows(store)


def test_bind_failures_in_a_batch_give_back_their_reservation(store):
    tree = add_device(store, handles_per_deployable=1)
    add_profile(store, "fpga", [{"resources:FPGA": "1"}])
    arqs = create(store, "fpga", "pa") + create(store, "fpga", "pa")
    for arq in arqs:
        start(store, [arq], tree, "pa")
    assert sorted(store.transact(arq_state.finish_binds, arqs).values()) == ["BindFailed", "Bound"]
    assert usage_of(store) == {("pa", "FPGA"): (1, 0)}  # no handle left for the second


def test_migration_counts_what_the_arqs_already_hold(store):
    from alembic import command

    from rayborg.store.migrate import _config, upgrade

    tree = add_device(store, handles_per_deployable=4)
    add_profile(store, "fpga", [{"resources:FPGA": "1"}])
    bound, started = create(store, "fpga", "pa"), create(store, "fpga", "pa")
    create(store, "fpga", "pa")  # Initial: nothing
    start(store, bound, tree, "pa")
    store.transact(arq_state.finish_binds, bound)
    start(store, started, tree, "pa")
    cfg = _config()
    with store.engine.connect().execution_options(sqlite_write=True) as conn, conn.begin():
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0003")  # a database from before the counters
    upgrade(store.engine)
    assert store.query(quotas.counters) == {("pa", 1, 0): (1, 1)}
    assert usage_of(store) == {("pa", "FPGA"): (1, 1)}


def test_a_claim_over_quota_is_refused_and_creates_nothing(store):
    """rayborg.claim (claims.start) passes the quota like a bind PATCH: the refusal names the
    resource, limit and usage, and neither ARQs nor usage are left behind."""
    from rayborg.store import claims

    add_device(store, deployables=4, handles_per_deployable=1)
    add_profile(store, "fpga", [{"resources:FPGA": "1"}])
    amounts, limits = arq_state.AmountLimits(per_group=64, per_profile=8), Limits(per_class={"FPGA": 2})
    store.transact(claims.start, "fpga", 1, None, claims.consumer_uuid(None), "pa", amounts, (), limits)
    with pytest.raises(QuotaExceeded, match=r"resource FPGA of project pa: limit 2, usage 1, requested 2"):
        store.transact(claims.start, "fpga", 2, None, claims.consumer_uuid(None), "pa", amounts, (), limits)
    assert len(store.query(claims.listing)) == 1 and usage_of(store) == {("pa", "FPGA"): (0, 1)}
    assert store.query(lambda s: len(list(s.scalars(select(ExtARQ))))) == 1
    store.transact(claims.start, "fpga", 1, None, claims.consumer_uuid(None), "pa", amounts, (), limits)
    assert usage_of(store) == {("pa", "FPGA"): (0, 2)}

"""What a bind costs in SQL statements (round trips on PostgreSQL), on SQLite and PostgreSQL, so that a
regression shows; and the front door's group commit of concurrent binds (`Store.agroup_transact`):
one quota UPSERT per shared transaction, counters equal to the ARQ rows, one handle per bind."""

from __future__ import annotations

import asyncio
import uuid
from contextlib import contextmanager

from sqlalchemy import event, select

from factories import add_device, add_profile
from rayborg.store import arq_state, bind_plan, quotas
from rayborg.store.arq_state import BindTarget
from rayborg.store.quotas import Limits
from rayborg.store.tables import ARQState, AttachHandle, ExtARQ

# start_bind of one instance's 2 ARQs: lock the ARQs, the per-instance lock (PostgreSQL), the
# instance check, one executemany of the compare-and-set, the quota UPSERT. BEGIN/COMMIT are not
# cursor executions; psycopg pipelines an executemany into one round trip.
START_BIND_MAX = 5
# The binder's batch (bind_plan.finish_quick) of 20 ARQs: plans, lock, targets, claim, Bound
# executemany, quota UPSERT.
FINISH_BATCH_MAX = 6


@contextmanager
def counted(store):
    statements: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    event.listen(store.engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(store.engine, "before_cursor_execute", count)


def _new_arqs(store, n: int, name: str = "dp") -> list[str]:
    add_profile(store, name, [{"resources:FPGA": str(n)}])
    return [a.uuid for a in store.transact(arq_state.create_arqs, name, "proj")]


def test_a_bind_start_and_a_batch_finish_take_a_few_statements(store):
    tree = add_device(store, handles_per_deployable=40)
    add_profile(store, "pair", [{"resources:FPGA": "2"}])
    instances = []
    for _ in range(10):
        arqs = [a.uuid for a in store.transact(arq_state.create_arqs, "pair", "proj")]
        instance = str(uuid.uuid4())
        targets = {a: BindTarget("host1", tree.rp_uuids[0], instance, "proj") for a in arqs}
        with counted(store) as statements:
            store.transact(arq_state.start_bind, targets, quota=None)
        assert len(statements) <= START_BIND_MAX, statements
        instances.append(arqs)
    every = [a for arqs in instances for a in arqs]
    with counted(store) as statements:
        plans, states = store.transact(bind_plan.finish_quick, every, lambda plan: False)
    assert set(states.values()) == {ARQState.BOUND.value}
    assert len(statements) <= FINISH_BATCH_MAX, statements


async def test_concurrent_binds_share_transactions_and_count_the_quota_once_each(store):
    tree = add_device(store, deployables=2, handles_per_deployable=30)
    add_profile(store, "pair", [{"resources:FPGA": "2"}])
    pairs = [[a.uuid for a in store.transact(arq_state.create_arqs, "pair", "proj")] for _ in range(30)]
    limits = Limits.from_table({"default": 1000})

    async def bind(i: int, arqs: list[str]):
        instance = str(uuid.uuid4())
        targets = {a: BindTarget("host1", tree.rp_uuids[i % 2], instance, "proj") for a in arqs}
        if i % 10 == 3:  # an ARQ that is not there: this call alone fails, its reservation undone
            targets[str(uuid.uuid4())] = targets[arqs[0]]
        return await store.agroup_transact(arq_state.start_bind, targets, quota=limits if i % 2 else None)

    with counted(store) as statements:
        outcomes = await asyncio.gather(*(bind(i, arqs) for i, arqs in enumerate(pairs)), return_exceptions=True)
    failed = [i for i, o in enumerate(outcomes) if isinstance(o, BaseException)]
    assert failed == [3, 13, 23]
    upserts = [s for s in statements if s.lstrip().upper().startswith("INSERT INTO QUOTA_USAGES")]
    transactions = len(statements) - len(upserts)
    # quota-checked calls write the counters before their check; the others' changes wait for the end
    assert len(upserts) < len(pairs) and transactions
    started = [a for i, arqs in enumerate(pairs) if i not in failed for a in arqs]
    states = dict(store.query(lambda s: list(s.execute(select(ExtARQ.uuid, ExtARQ.state)))))
    assert all(states[a] == ARQState.BIND_STARTED for a in started)
    assert all(states[a] == ARQState.INITIAL for i in failed for a in pairs[i])
    assert store.query(quotas.counters) == store.query(quotas.counters_from_rows)
    assert store.query(quotas.counters) == {("proj", pairs and store.query(
        lambda s: s.scalar(select(ExtARQ.device_profile_id).where(ExtARQ.uuid == started[0]))), 0): (0, len(started))}

    finished = store.transact(arq_state.finish_binds, started)
    assert set(finished.values()) == {ARQState.BOUND.value}
    handles = store.query(lambda s: list(s.execute(select(ExtARQ.attach_handle_id).where(ExtARQ.uuid.in_(started)))))
    assert len({h for (h,) in handles}) == len(started)  # never one handle twice
    in_use = store.query(lambda s: s.scalars(select(AttachHandle.id).where(AttachHandle.in_use.is_(True))).all())
    assert sorted(in_use) == sorted(h for (h,) in handles)
    assert store.query(quotas.counters) == store.query(quotas.counters_from_rows)

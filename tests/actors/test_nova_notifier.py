"""actors/nova_notifier.py without Ray or Nova: a step sends the events the store owes for the
instances its binder owns (one instance's events never split over calls), clears only what Nova
took, and reports what is left (Nova down, an instance refused) so the wake loop retries it."""

from __future__ import annotations

import uuid

import pytest
from factories import add_device, add_profile

from rayborg.actors import nova_notifier
from rayborg.actors.nova_client import NovaError
from rayborg.actors.nova_notifier import NovaNotifier
from rayborg.store import arq_state, nova_events
from rayborg.store.arq_state import BindTarget
from rayborg.store.engine import Store
from rayborg.store.migrate import upgrade

INSTANCES = [str(uuid.UUID(int=i)) for i in (1, 2, 3)]


class FakeNova:
    def __init__(self):
        self.calls: list[list] = []
        self.refuse: set[str] = set()
        self.down = False

    def send_bound_events(self, events):
        if self.down:
            raise NovaError("Nova unreachable")
        self.calls.append(list(events))
        return {e.instance_uuid for e in events} & self.refuse


@pytest.fixture
def store(sqlite_url):
    """Three instances, two ARQs each, all Bound: six events owed."""
    s = Store(sqlite_url)
    upgrade(s.engine)
    add_profile(s, "dp", [{"resources:FPGA": "2"}])
    tree = add_device(s, handles_per_deployable=6)
    for instance in INSTANCES:
        arqs = [r.uuid for r in s.transact(arq_state.create_arqs, "dp", "p1")]
        s.transact(arq_state.start_bind, {u: BindTarget("host1", tree.rp_uuids[0], instance) for u in arqs})
        for u in arqs:
            s.transact(arq_state.finish_bind, u)
    yield s
    s.dispose()


async def test_sends_only_its_own_instances_and_clears_what_nova_took(store):
    nova = FakeNova()
    notifier = NovaNotifier(store, nova, owns=lambda instance: instance != INSTANCES[2])
    assert await notifier.step()
    assert len(nova.calls) == 1 and {e.instance_uuid for e in nova.calls[0]} == set(INSTANCES[:2])
    assert notifier.sent == 4 and set(store.query(nova_events.pending)) == {INSTANCES[2]}


async def test_nova_down_or_refusing_leaves_the_events_owed(store):
    nova = FakeNova()
    notifier = NovaNotifier(store, nova, owns=lambda instance: True)
    nova.down = True
    assert await notifier.step() is False and len(store.query(nova_events.pending)) == 3
    nova.down, nova.refuse = False, {INSTANCES[1]}
    assert await notifier.step() is False
    assert set(store.query(nova_events.pending)) == {INSTANCES[1]} and notifier.sent == 4
    nova.refuse = set()
    assert await notifier.step() and store.query(nova_events.pending) == {}


async def test_batches_never_split_an_instance(store, monkeypatch):
    monkeypatch.setattr(nova_notifier, "NOVA_BATCH", 3)
    nova = FakeNova()
    assert await NovaNotifier(store, nova, owns=lambda instance: True).step()
    assert [len(c) for c in nova.calls] == [4, 2]  # the batch is full after an instance, not inside one
    for call in nova.calls:
        for instance in {e.instance_uuid for e in call}:
            assert sum(e.instance_uuid == instance for e in call) == 2

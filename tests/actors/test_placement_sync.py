"""actors/placement_sync.py without Ray: its retry step (`wake_loop`) pushes what a previous
incarnation left dirty at start, retries with a growing backoff while Placement is down (noting
since when), stops once a push is complete, pushes again when nudged, and without Placement has
nothing to retry. The actor's class runs in this event loop; `push` is replaced by a recording one."""

from __future__ import annotations

import asyncio
import time

import pytest

from rayborg.actors import placement_push
from rayborg.actors.placement_client import PlacementUnavailable
from rayborg.actors.placement_push import PushResult
from rayborg.actors.placement_sync import PlacementSync
from rayborg.actors.runtime_config import RuntimeConfig
from rayborg.store.migrate import upgrade

RETRY = 0.05


class FakePush:
    """`placement_push.push`: unavailable for the first `down` calls, then complete."""

    def __init__(self, down: int):
        self.down = down
        self.calls: list[float] = []

    def __call__(self, store, client, hostname):
        self.calls.append(time.monotonic())
        if len(self.calls) <= self.down:
            raise PlacementUnavailable("connection refused")
        return PushResult(pushed=1)


async def _sync(sqlite_url, placement=object()):
    from rayborg.store.engine import Store

    fresh = Store(sqlite_url)
    upgrade(fresh.engine)
    fresh.dispose()
    sync = object.__new__(PlacementSync.__ray_metadata__.modified_class)
    await PlacementSync.__ray_metadata__.modified_class.__init__(
        sync, RuntimeConfig(database_url=sqlite_url, retry_interval=RETRY))
    sync.placement = placement
    return sync


async def _until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert predicate()


async def test_placement_down_is_retried_with_backoff_until_a_push_lands(sqlite_url, monkeypatch):
    fake = FakePush(down=3)
    monkeypatch.setattr(placement_push, "push", fake)
    sync = await _sync(sqlite_url)
    try:
        await _until(lambda: sync.placement_down_since is not None)
        await _until(lambda: len(fake.calls) == 4 and sync.placement_down_since is None)
        gaps = [b - a for a, b in zip(fake.calls, fake.calls[1:])]
        assert gaps[0] >= RETRY * 0.9 and gaps[1] >= 2 * RETRY * 0.9 and gaps[2] >= 4 * RETRY * 0.9
        assert sync.last_push["pushed"] == 1
        await asyncio.sleep(10 * RETRY)
        assert len(fake.calls) == 4  # complete: no more pushes until there is something new
        await sync.nudge()
        await _until(lambda: len(fake.calls) == 5)
    finally:
        sync._retry_task.cancel()
        sync.store.dispose()


async def test_an_incomplete_push_is_retried(sqlite_url, monkeypatch):
    calls = []

    def waiting(store, client, hostname):
        calls.append(hostname)
        return PushResult(waiting_for_compute_node=["h1"] if len(calls) < 3 else [])

    monkeypatch.setattr(placement_push, "push", waiting)
    sync = await _sync(sqlite_url)
    try:
        await _until(lambda: len(calls) == 3)
        await asyncio.sleep(10 * RETRY)
        assert calls == [None, None, None] and sync.last_push["waiting_for_compute_node"] == []
    finally:
        sync._retry_task.cancel()
        sync.store.dispose()


async def test_without_placement_there_is_nothing_to_retry(sqlite_url, monkeypatch):
    monkeypatch.setattr(placement_push, "push", pytest.fail)
    sync = await _sync(sqlite_url, placement=None)
    try:
        assert await sync._retry_step() is True
        assert not await sync._push(None)
    finally:
        sync._retry_task.cancel()
        sync.store.dispose()

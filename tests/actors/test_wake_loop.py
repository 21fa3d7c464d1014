"""The binders' one loop helper: a step runs when woken and every `poll` seconds, a failing step
(False or an exception) runs again after a doubling backoff, and a success resets the backoff."""

from __future__ import annotations

import asyncio
import time

from rayborg.actors import wake_loop


async def test_a_step_runs_when_woken_and_retries_with_growing_backoff():
    runs: list[float] = []
    outcomes = iter([True, False, "raise", False, True])

    async def step() -> bool:
        runs.append(time.monotonic())
        outcome = next(outcomes, True)
        if outcome == "raise":
            raise RuntimeError("store hiccup")
        return outcome

    wake = asyncio.Event()
    task = wake_loop.start(step, wake, retry=0.05, max_backoff=0.1)
    try:
        await asyncio.sleep(0.05)
        assert runs == []  # nothing until woken (no poll)
        wake.set()
        await asyncio.sleep(0.02)
        assert len(runs) == 1  # a success: waits for the next wake
        wake.set()
        deadline = time.monotonic() + 5
        while len(runs) < 5 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        gaps = [b - a for a, b in zip(runs[1:], runs[2:])]
        assert len(runs) == 5 and gaps[0] >= 0.05 and gaps[1] >= 0.1 and gaps[2] >= 0.1  # doubled, capped
        await asyncio.sleep(0.2)
        assert len(runs) == 5  # the last run succeeded: no more retries
    finally:
        task.cancel()


async def test_a_polled_step_runs_without_a_wake():
    runs = []

    async def step() -> bool:
        runs.append(1)
        return True

    task = wake_loop.start(step, poll=0.02)
    try:
        await asyncio.sleep(0.15)
        assert len(runs) >= 3
    finally:
        task.cancel()

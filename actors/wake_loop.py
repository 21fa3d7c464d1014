"""The one loop behind every background step of the binders, PlacementSync and the supervisor: run
`step()` when woken (and every `poll` seconds, in case a wake was lost or there is nothing to wake
it), and again after a growing backoff while it reports something left to retry."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("rayborg.wake_loop")

MAX_BACKOFF = 30.0

Step = Callable[[], Awaitable[bool]]  # True: done; False: something failed, run again after a backoff


async def run(step: Step, wake: asyncio.Event, *, poll: float | None = None, retry: float = 1.0,
              max_backoff: float = MAX_BACKOFF) -> None:
    """Forever: wait for `wake` (at most `poll` seconds), clear it, run `step`. A step that fails
    (False, or an exception, which is logged) runs again after `retry` seconds, doubling up to
    `max_backoff` while it keeps failing."""
    delay = retry
    while True:
        if poll is None:
            await wake.wait()
        else:
            try:
                await asyncio.wait_for(wake.wait(), poll)
            except TimeoutError:
                pass
        wake.clear()
        try:
            done = await step()
        except Exception:  # noqa: BLE001 - a store or service hiccup: the step runs again
            log.exception("%s failed", getattr(step, "__qualname__", step))
            done = False
        if done:
            delay = retry
        else:
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_backoff)
            wake.set()


def start(step: Step, wake: asyncio.Event | None = None, **kwargs) -> asyncio.Task:
    """`run` as a task of the running loop (`wake`: a new event when the step only polls)."""
    return asyncio.get_running_loop().create_task(run(step, wake or asyncio.Event(), **kwargs))

"""Binder 0's claim reaper: releases the standalone claims of Ray jobs that ended (the job id is in
the claim's consumer uuid, `store/claims.py`), also when the job ended while no binder ran."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from rayborg.store import claims
from rayborg.store.engine import Store

log = logging.getLogger("rayborg.claims")

REAP_INTERVAL = 2.0


def dead_jobs() -> set[str] | None:
    """The ids of the Ray jobs that ended (None: the job table cannot be read)."""
    try:
        import ray._private.state as ray_state

        return {j["JobID"].lower() for j in ray_state.jobs() if j.get("IsDead")}
    except Exception as exc:  # noqa: BLE001 - no job table: keep the claims
        log.debug("job table unavailable: %s", exc)
        return None


class ClaimReaper:
    def __init__(self, store: Store, release: Callable[[str], Awaitable[Any]]):
        self.store = store
        self.release = release
        self.reaped = 0

    async def step(self) -> bool:
        """Release the claims whose job ended; False when one could not be released (retried)."""
        jobs = {c: claims.claim_job(c) for c in await asyncio.to_thread(self.store.query, claims.listing)}
        if not any(jobs.values()):
            return True
        dead = await asyncio.to_thread(dead_jobs)
        done = True
        for consumer, job in jobs.items():
            if dead and job in dead:
                try:
                    await self.release(consumer)
                except Exception as exc:  # noqa: BLE001 - next round
                    log.warning("claim of ended job %s not released yet: %s", job, exc, extra={"instance": consumer})
                    done = False
                    continue
                self.reaped += 1
                log.info("claim released: its Ray job %s ended", job, extra={"instance": consumer})
        return done

"""actors/claim_reaper.py without Ray: a step releases exactly the claims whose Ray job ended, keeps
the others (and all of them while the job table cannot be read), and reports a release that failed
so that the wake loop retries it."""

from __future__ import annotations

import pytest
from factories import add_device, add_profile

from rayborg.actors import claim_reaper
from rayborg.actors.claim_reaper import ClaimReaper
from rayborg.store import arq_state, claims
from rayborg.store.engine import Store
from rayborg.store.migrate import upgrade

LIMITS = arq_state.AmountLimits(per_group=64, per_profile=8)
ENDED, RUNNING = claims.consumer_uuid("0000000a"), claims.consumer_uuid("0000000b")


@pytest.fixture
def store(sqlite_url):
    s = Store(sqlite_url)
    upgrade(s.engine)
    add_profile(s, "one", [{"resources:FPGA": "1"}])
    add_device(s, "host1", deployables=2, handles_per_deployable=1)
    for consumer in (ENDED, RUNNING):
        s.transact(claims.start, "one", 1, None, consumer, "p1", LIMITS, ())
    yield s
    s.dispose()


async def test_releases_only_the_claims_of_ended_jobs(store, monkeypatch):
    released = []

    async def release(consumer):
        released.append(consumer)

    reaper = ClaimReaper(store, release)
    monkeypatch.setattr(claim_reaper, "dead_jobs", lambda: None)  # job table unreadable: keep all
    assert await reaper.step() and released == []
    monkeypatch.setattr(claim_reaper, "dead_jobs", lambda: {"0000000a", "ffffffff"})
    assert await reaper.step()
    assert released == [ENDED] and reaper.reaped == 1


async def test_a_failed_release_is_retried(store, monkeypatch):
    async def release(consumer):
        raise RuntimeError("binder busy")

    monkeypatch.setattr(claim_reaper, "dead_jobs", lambda: {"0000000a"})
    reaper = ClaimReaper(store, release)
    assert await reaper.step() is False and reaper.reaped == 0


async def test_no_claims_reads_no_job_table(sqlite_url, monkeypatch):
    s = Store(sqlite_url)
    upgrade(s.engine)

    def never():
        raise AssertionError("job table read without claims")

    monkeypatch.setattr(claim_reaper, "dead_jobs", never)
    try:
        assert await ClaimReaper(s, None).step()
    finally:
        s.dispose()

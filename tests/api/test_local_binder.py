"""`--no-actors`: the in-process binder finishes binds a previous process left in BindStarted when the
app starts, and re-drives binds whose finishing failed (issue 14 item 4)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from factories import add_device, add_profile
from rayborg.api.app import create_app
from rayborg.api.app_keys import BINDER
from rayborg.api.local_binder import LocalBinder
from rayborg.store import arq_state

NOVA = {"X-Project-Id": "p1", "X-User-Id": "u1", "X-Roles": "member", "X-Service-Roles": "service"}


@pytest.fixture
def tree(store):
    add_profile(store, "dp", [{"resources:FPGA": "1"}])
    return add_device(store, handles_per_deployable=2)


def bind_started(store, tree) -> tuple[str, str]:
    """An ARQ moved to BindStarted by a PATCH whose process died before it finished the bind."""
    arq = store.transact(arq_state.create_arqs, "dp", "p1")[0].uuid
    instance = str(uuid.uuid4())
    store.transact(arq_state.start_bind, {arq: arq_state.BindTarget("host1", tree.rp_uuids[0], instance, "p1")})
    return arq, instance


async def state_of(client, arq: str) -> str:
    resp = await client.get(f"/v2/accelerator_requests/{arq}", headers=NOVA)
    assert resp.status == 200, await resp.text()
    return (await resp.json())["state"]


async def resolved_answer(client, instance: str) -> int:
    resp = await client.get(f"/v2/accelerator_requests?instance={instance}&bind_state=resolved", headers=NOVA)
    return resp.status


async def test_a_bind_left_in_bind_started_is_finished_when_the_app_starts(aiohttp_client, settings, store, tree):
    arq, instance = bind_started(store, tree)
    client = await aiohttp_client(create_app(settings, store))  # the default LocalBinder
    await client.app[BINDER].drain()  # start() has submitted the resume before serving
    assert await state_of(client, arq) == "Bound"
    assert await resolved_answer(client, instance) == 200


async def test_a_bind_whose_finish_failed_is_redriven(aiohttp_client, settings, store, tree, monkeypatch):
    binder = LocalBinder(store, redrive_interval=0.05)
    calls = []
    real = store.atransact

    async def failing_once(fn, *args, **kwargs):
        calls.append(fn)
        if len(calls) == 1:
            raise RuntimeError("database went away")
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(store, "atransact", failing_once)
    client = await aiohttp_client(create_app(settings, store, binder=binder))
    await binder.start()
    arq, instance = bind_started(store, tree)
    await binder.submit([arq])
    await binder.drain()
    assert calls and await state_of(client, arq) == "BindStarted"  # the first _finish failed
    assert await resolved_answer(client, instance) == 423
    for _ in range(200):  # evidence, not a fixed sleep: the re-drive runs every 0.05 s
        if await state_of(client, arq) != "BindStarted":
            break
        await asyncio.sleep(0.05)
    assert await state_of(client, arq) == "Bound"
    assert binder.redriven == 1 and len(calls) == 2
    assert await resolved_answer(client, instance) == 200
    await binder.close()


async def test_a_bind_in_progress_is_not_redriven(store, tree):
    """The re-drive skips ARQs a task of this binder is still finishing (no second claim)."""
    binder = LocalBinder(store, redrive_interval=0.01)
    gate = asyncio.Event()
    real = store.atransact
    finished = []

    async def slow(fn, *args, **kwargs):
        await gate.wait()
        finished.append(args[0])
        return await real(fn, *args, **kwargs)

    store.atransact = slow
    try:
        await binder.start()
        arq, _ = bind_started(store, tree)
        await binder.submit([arq])
        await asyncio.sleep(0.2)  # many re-drive rounds pass while the bind is held
        gate.set()
        await binder.drain()
        assert finished == [[arq]] and binder.redriven == 0
    finally:
        del store.atransact
        await binder.close()

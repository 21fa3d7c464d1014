"""Programs deployables for `PATCH /v2/deployables/{uuid}/program` through their host's agent.

The request is recorded first (so it is never lost); programming then runs in the background and
the request row ends `done` or `failed` with the tool's error. The next discovery of that host
brings the new bitstream id and function traits into the store and Placement.
"""

from __future__ import annotations

import asyncio
import logging

import ray

from rayborg.actors.runtime_config import NAMESPACE, host_agent_name
from rayborg.store.queries import program_requests

log = logging.getLogger("rayborg.programmer")


class RayProgrammer:
    def __init__(self, store):
        self.store = store
        self._tasks: set[asyncio.Task] = set()

    async def submit(self, request_uuid: str) -> None:
        task = asyncio.get_running_loop().create_task(self._program(request_uuid))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _program(self, request_uuid: str) -> None:
        job = await self.store.atransact(program_requests.start, request_uuid)
        if job is None:
            return
        try:
            agent = ray.get_actor(host_agent_name(job.hostname), namespace=NAMESPACE)
            result = await agent.program.remote(job.driver_name, job.deployable_name, job.image_uuid)
            error = result["error"]
        except Exception as exc:  # noqa: BLE001 - the host may be gone: record why
            error = f"host {job.hostname} unavailable: {exc}"
        if error:
            log.warning("programming %s with %s failed: %s", job.deployable_name, job.image_uuid, error)
        else:
            log.info("programmed %s with %s", job.deployable_name, job.image_uuid)
        await self.store.atransact(program_requests.finish, request_uuid, error)

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def resume(self) -> None:
        """Pick up requests a previous front door recorded or took but did not finish."""
        await self.store.atransact(program_requests.interrupted)
        for request_uuid in await self.store.aquery(program_requests.requested):
            await self.submit(request_uuid)

    async def close(self) -> None:
        await self.drain()

"""Push rayborg's part of a standalone consumer's allocations into Placement.

`push` reads the consumer's allocations, replaces the RPs rayborg put there before (`pushed`) with
what its ARQs hold now (`desired`), keeps every other RP of the consumer as it was, and writes the
result with the consumer generation just read (a 409 concurrent_update re-reads and retries).
Placement refusing the write for capacity (someone else's allocation fills the RP) is an
`AllocationRefused`; Placement unreachable stays a `PlacementUnavailable` for the caller's backoff.
"""

from __future__ import annotations

import logging
import random
import time

from rayborg.actors.placement_client import GENERATION_RETRIES, PlacementClient, PlacementError
from rayborg.store.standalone_allocations import Allocations, Pending

log = logging.getLogger("rayborg.standalone_placement")

CONSUMER_TYPE = "RAYBORG"  # consumer type of consumers rayborg creates (microversion 1.38)
DEFAULT_OWNER = "rayborg"  # project/user of a new consumer whose ARQs name no project


class AllocationRefused(PlacementError):
    """Placement would not take the allocation (capacity, unknown RP, bad request)."""


def _allocations(body: dict) -> Allocations:
    return {rp: dict(a.get("resources", {})) for rp, a in body.get("allocations", {}).items()}


def push(client: PlacementClient, pending: Pending) -> Allocations:
    """Make Placement hold `pending.desired` as rayborg's part of the consumer's allocations; the
    part now pushed (= desired). Writes nothing when Placement already matches."""
    what = f"allocations of consumer {pending.consumer}"
    for attempt in range(GENERATION_RETRIES):
        resp = client._request("GET", f"/allocations/{pending.consumer}")
        if resp.status_code != 200:
            raise client._error(resp, f"read {what}")
        body = resp.json()
        current = _allocations(body)
        merged = {rp: res for rp, res in current.items() if rp not in pending.pushed}
        merged.update(pending.desired)
        if merged == current:
            return pending.desired
        if not merged:
            resp = client._request("DELETE", f"/allocations/{pending.consumer}")
            if resp.status_code in (204, 404):
                return pending.desired
        else:
            resp = client._request("PUT", f"/allocations/{pending.consumer}", {
                "allocations": {rp: {"resources": res} for rp, res in merged.items()},
                "consumer_generation": body.get("consumer_generation"),
                "project_id": body.get("project_id") or pending.project_id or DEFAULT_OWNER,
                "user_id": body.get("user_id") or DEFAULT_OWNER,
                "consumer_type": body.get("consumer_type") or CONSUMER_TYPE,
            })
            if resp.status_code == 204:
                log.info("Placement: consumer %s now holds %s (rayborg's part)", pending.consumer,
                         pending.desired or "nothing")
                return pending.desired
        err = client._error(resp, f"write {what}")
        if resp.status_code == 409 and err.code == "placement.concurrent_update":
            time.sleep(random.uniform(0, 0.05 * (attempt + 1)))
            continue
        raise AllocationRefused(str(err), err.status, err.code)
    raise AllocationRefused(f"write {what}: consumer generation kept changing", 409,
                            "placement.concurrent_update")

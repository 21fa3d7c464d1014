"""Tells Nova that ARQs are resolved: `accelerator-request-bound` external events.

One event per ARQ (`tag` = ARQ uuid, `status` = completed|failed), as Nova's compute manager waits
for them, and the events of many instances in one POST (Nova takes a list of events for any servers,
as Neutron's notifier sends them; one call per instance was most of a binder's work under load).
Nova answers 200, or 207 with a code per event. Per instance: 200 is delivered; 422 (the instance
has no host yet, which Nova handles by checking Cyborg before it waits) and 404 (no such instance,
deleted or the consumer of a standalone bind: nobody waits) count as delivered too; any other code
leaves that instance's events to retry. A 404 "No instances found" for the whole call drops them
all; anything else is an error the caller retries.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from keystoneauth1 import session as ks_session

log = logging.getLogger(__name__)

EVENT_NAME = "accelerator-request-bound"
COMPUTE_MICROVERSION = "2.82"
NO_INSTANCE = "No instances found for any event"  # Nova's 404 when none of the events' servers exists
STATUS_BY_STATE = {"Bound": "completed", "BindFailed": "failed", "Deleting": "failed"}


class NovaError(Exception):
    """The events were not delivered; retry later."""


@dataclass(frozen=True)
class BoundEvent:
    instance_uuid: str
    arq_uuid: str
    arq_state: str

    def as_json(self) -> dict[str, str]:
        return {"name": EVENT_NAME, "server_uuid": self.instance_uuid, "tag": self.arq_uuid,
                "status": STATUS_BY_STATE[self.arq_state]}


class NovaClient:
    def __init__(self, url: str | None = None, token: str | None = None,
                 session: ks_session.Session | None = None, timeout: float = 10.0):
        # keystoneauth1 (~3 MiB) only in the processes that talk to Nova, not in every actor
        from keystoneauth1 import adapter, session as ks_session, token_endpoint

        if session is None:
            if url is None:
                raise ValueError("a Nova URL or a keystoneauth1 session is needed")
            session = ks_session.Session(auth=token_endpoint.Token(url, token or "admin"), timeout=timeout)
        self._api = adapter.Adapter(session, service_type="compute", endpoint_override=url,
                                    default_microversion=COMPUTE_MICROVERSION, raise_exc=False)

    def send_bound_events(self, events: list[BoundEvent]) -> set[str]:
        """One call for the events of any number of instances; returns the instances whose events
        Nova did not take (to retry), and raises NovaError when it took none of them."""
        instances = {e.instance_uuid for e in events}
        what = f"{len(instances)} instance(s)"
        body = {"events": [e.as_json() for e in events]}
        from keystoneauth1.exceptions import ClientException

        try:
            resp = self._api.post("/os-server-external-events", json=body)
        except ClientException as exc:
            raise NovaError(f"Nova unreachable for {what}: {exc}") from exc
        if resp.status_code == 200:
            return set()
        if resp.status_code == 404 and NO_INSTANCE in resp.text:
            # Nova knows none of these instances (deleted meanwhile, or the consumers of standalone
            # binds that Nova never saw): nobody waits for these events, and a retry could never succeed.
            log.info("Nova: no instance among %s; %d event(s) dropped", sorted(instances), len(events))
            return set()
        if resp.status_code == 207:
            answered = resp.json().get("events", [])
            refused: set[str] = set()
            for event in answered:
                code, instance = event.get("code"), event.get("server_uuid")
                if code == 422:
                    log.info("Nova: instance %s has no host yet (422); it will poll the ARQs", instance)
                elif code == 404:
                    log.info("Nova: no instance %s; its event for ARQ %s dropped", instance, event.get("tag"))
                elif code != 200:
                    log.warning("Nova refused the event of instance %s (code %s)", instance, code)
                    refused.add(instance)
            if len(answered) != len(events):  # an answer that does not say: retry them all
                refused = instances
            if refused == instances:
                raise NovaError(f"Nova refused the events of {what}: {resp.text[:200]}")
            return refused
        raise NovaError(f"Nova answered {resp.status_code} for {what}: {resp.text[:200]}")

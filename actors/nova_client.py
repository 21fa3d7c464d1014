"""Tells Nova that ARQs are resolved: `accelerator-request-bound` external events.

One POST per instance carrying one event per ARQ (`tag` = ARQ uuid, `status` = completed|failed),
as Nova's compute manager waits for them. Nova answers 200, or 207 with a code per event; a 207
where every code is 422 means the instance has no host yet, which Nova itself handles by checking
Cyborg before it waits, so that counts as delivered; so does a 404 "No instances found" (no such
instance: nobody waits). Anything else is an error the caller retries.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from keystoneauth1 import adapter, session as ks_session, token_endpoint
from keystoneauth1.exceptions import ClientException

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
        if session is None:
            if url is None:
                raise ValueError("a Nova URL or a keystoneauth1 session is needed")
            session = ks_session.Session(auth=token_endpoint.Token(url, token or "admin"), timeout=timeout)
        self._api = adapter.Adapter(session, service_type="compute", endpoint_override=url,
                                    default_microversion=COMPUTE_MICROVERSION, raise_exc=False)

    def send_bound_events(self, instance_uuid: str, events: list[BoundEvent]) -> None:
        """One call for one instance; raises NovaError when Nova did not take the events."""
        body = {"events": [e.as_json() for e in events]}
        try:
            resp = self._api.post("/os-server-external-events", json=body)
        except ClientException as exc:
            raise NovaError(f"Nova unreachable for instance {instance_uuid}: {exc}") from exc
        if resp.status_code == 200:
            return
        if resp.status_code == 404 and NO_INSTANCE in resp.text:
            # Nova knows no such instance (deleted meanwhile, or the consumer of a standalone bind
            # that Nova never saw): nobody waits for these events, and a retry could never succeed.
            log.info("Nova: no instance %s; %d event(s) dropped", instance_uuid, len(events))
            return
        if resp.status_code == 207:
            codes = {e.get("code") for e in resp.json().get("events", [])}
            if codes <= {200, 422}:
                if 422 in codes:
                    log.info("Nova: instance %s has no host yet (422); it will poll the ARQs", instance_uuid)
                return
            raise NovaError(f"Nova refused events for instance {instance_uuid}: codes {sorted(codes)}")
        raise NovaError(f"Nova answered {resp.status_code} for instance {instance_uuid}: {resp.text[:200]}")

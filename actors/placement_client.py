"""A small Placement client over keystoneauth1: providers, inventories, traits, resource classes.

Every provider write carries the generation just read; a 409 `placement.concurrent_update` is
answered by re-reading and re-applying the *desired* state (PUTs replace, so merging onto a stale
copy would lose another writer's change), a bounded number of times. Calls are counted so that
benchmarks and tests can check "an unchanged report costs zero writes".
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from typing import TYPE_CHECKING

from rayborg.actors import metrics
from rayborg.store.placement_state import ProviderState

if TYPE_CHECKING:
    from keystoneauth1 import session as ks_session

log = logging.getLogger(__name__)

MICROVERSION = "1.39"
GENERATION_RETRIES = 5


class PlacementError(Exception):
    def __init__(self, message: str, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


class PlacementUnavailable(PlacementError):
    """Placement cannot be reached (connection refused, timeout, 5xx): retry later."""


def is_custom(name: str) -> bool:
    return name.startswith("CUSTOM_")


class PlacementClient:
    def __init__(self, url: str | None = None, token: str | None = "admin",
                 session: ks_session.Session | None = None, timeout: float = 10.0):
        # keystoneauth1 (~3 MiB) only in the processes that talk to Placement, not in every actor
        from keystoneauth1 import adapter, session as ks_session, token_endpoint

        if session is None:
            if url is None:
                raise ValueError("a Placement URL or a keystoneauth1 session is needed")
            session = ks_session.Session(auth=token_endpoint.Token(url, token), timeout=timeout)
        self._api = adapter.Adapter(session, service_type="placement", endpoint_override=url,
                                    default_microversion=MICROVERSION, raise_exc=False)
        self.calls: Counter[str] = Counter()  # "GET", "PUT", "POST", "DELETE"
        self._known_classes: set[str] = set()
        self._known_traits: set[str] = set()

    # -- transport ---------------------------------------------------------------------------
    def _request(self, method: str, path: str, json: dict | None = None):
        from keystoneauth1.exceptions import ConnectFailure, ConnectTimeout, DiscoveryFailure

        self.calls[method] += 1
        try:
            resp = self._api.request(path, method, json=json)
        except (ConnectFailure, ConnectTimeout, DiscoveryFailure) as exc:
            metrics.placement_call(method, failed=True)
            raise PlacementUnavailable(f"Placement unreachable: {exc}") from exc
        metrics.placement_call(method, failed=resp.status_code >= 500)
        if resp.status_code >= 500:
            raise PlacementUnavailable(f"Placement {method} {path}: {resp.status_code}", resp.status_code)
        return resp

    @staticmethod
    def _error(resp, what: str) -> PlacementError:
        try:
            err = resp.json()["errors"][0]
            return PlacementError(f"{what}: {resp.status_code} {err.get('detail', '')}".strip(),
                                  resp.status_code, err.get("code"))
        except Exception:  # noqa: BLE001 - non-JSON error body
            return PlacementError(f"{what}: {resp.status_code} {resp.text[:200]}", resp.status_code)

    @property
    def writes(self) -> int:
        return self.calls["PUT"] + self.calls["POST"] + self.calls["DELETE"]

    # -- reads -------------------------------------------------------------------------------
    def find_provider_by_name(self, name: str) -> str | None:
        resp = self._request("GET", f"/resource_providers?name={name}")
        if resp.status_code != 200:
            raise self._error(resp, f"find provider {name}")
        rps = resp.json()["resource_providers"]
        return rps[0]["uuid"] if rps else None

    def get_provider(self, rp_uuid: str) -> dict | None:
        resp = self._request("GET", f"/resource_providers/{rp_uuid}")
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise self._error(resp, f"get provider {rp_uuid}")
        return resp.json()

    def get_inventories(self, rp_uuid: str) -> tuple[int, dict]:
        resp = self._request("GET", f"/resource_providers/{rp_uuid}/inventories")
        if resp.status_code != 200:
            raise self._error(resp, f"get inventories {rp_uuid}")
        body = resp.json()
        return body["resource_provider_generation"], body["inventories"]

    def get_traits(self, rp_uuid: str) -> tuple[int, list[str]]:
        resp = self._request("GET", f"/resource_providers/{rp_uuid}/traits")
        if resp.status_code != 200:
            raise self._error(resp, f"get traits {rp_uuid}")
        body = resp.json()
        return body["resource_provider_generation"], body["traits"]

    def providers_in_tree(self, root_uuid: str) -> list[dict]:
        resp = self._request("GET", f"/resource_providers?in_tree={root_uuid}")
        if resp.status_code != 200:
            raise self._error(resp, f"list tree {root_uuid}")
        return resp.json()["resource_providers"]

    # -- names -------------------------------------------------------------------------------
    def ensure_resource_class(self, rc: str) -> None:
        if not is_custom(rc) or rc in self._known_classes:
            return
        resp = self._request("PUT", f"/resource_classes/{rc}")
        if resp.status_code not in (201, 204):
            raise self._error(resp, f"create resource class {rc}")
        self._known_classes.add(rc)

    def ensure_traits(self, traits: list[str] | tuple[str, ...]) -> None:
        for trait in traits:
            if not is_custom(trait) or trait in self._known_traits:
                continue
            resp = self._request("PUT", f"/traits/{trait}")
            if resp.status_code not in (201, 204):
                raise self._error(resp, f"create trait {trait}")
            self._known_traits.add(trait)

    # -- writes ------------------------------------------------------------------------------
    def create_provider(self, rp_uuid: str, name: str, parent_uuid: str) -> int | None:
        """Create a provider (or find the one with that uuid); returns its current generation."""
        resp = self._request("POST", "/resource_providers",
                             {"uuid": rp_uuid, "name": name, "parent_provider_uuid": parent_uuid})
        if resp.status_code == 409:
            existing = self.get_provider(rp_uuid)  # made by an earlier attempt, or before a restart
            if existing is not None:
                return existing["generation"]
        if resp.status_code not in (200, 201):
            raise self._error(resp, f"create provider {name}")
        return resp.json().get("generation") if resp.status_code == 200 else None

    def _with_generation(self, what: str, read, write, generation: int | None = None) -> int | None:
        """write(generation) with a generation we know or read(); re-read and retry on
        concurrent_update. Returns the provider's new generation when Placement says it."""
        for attempt in range(GENERATION_RETRIES):
            resp = write(read() if generation is None else generation)
            if resp.status_code in (200, 204):
                body = resp.json() if resp.status_code == 200 else {}
                return body.get("resource_provider_generation")
            err = self._error(resp, what)
            if resp.status_code != 409 or err.code != "placement.concurrent_update":
                raise err
            generation = None
            time.sleep(random.uniform(0, 0.05 * (attempt + 1)))
        raise err

    def set_inventory(self, rp_uuid: str, rc: str, total: int, reserved: int,
                      generation: int | None = None) -> int | None:
        # no accelerators (a nested FPGA's parent, whose regions hold them): no inventory at all
        inv = {rc: {"total": total, "max_unit": max(total, 1), "reserved": min(reserved, total)}} if total else {}
        return self._with_generation(
            f"set inventory {rp_uuid}",
            lambda: self.get_inventories(rp_uuid)[0],
            lambda gen: self._request("PUT", f"/resource_providers/{rp_uuid}/inventories",
                                      {"resource_provider_generation": gen, "inventories": inv}),
            generation)

    def set_traits(self, rp_uuid: str, traits: list[str] | tuple[str, ...],
                   generation: int | None = None) -> int | None:
        self.ensure_traits(traits)
        return self._with_generation(
            f"set traits {rp_uuid}",
            lambda: self.get_traits(rp_uuid)[0],
            lambda gen: self._request("PUT", f"/resource_providers/{rp_uuid}/traits",
                                      {"resource_provider_generation": gen, "traits": sorted(traits)}),
            generation)

    def delete_provider(self, rp_uuid: str) -> None:
        resp = self._request("DELETE", f"/resource_providers/{rp_uuid}")
        if resp.status_code not in (204, 404):
            raise self._error(resp, f"delete provider {rp_uuid}")

    # -- desired state -----------------------------------------------------------------------
    def apply(self, desired: ProviderState, last: ProviderState | None) -> None:
        """Make one device RP match `desired`, writing only what differs from `last` (what we
        pushed before). `last=None` means unknown: check Placement and write everything."""
        # A provider we just created has generation 0 and each write returns the next one, so a
        # new device costs three writes and no reads.
        generation = None
        if last is None:
            generation = self.create_provider(desired.uuid, desired.name, desired.parent_uuid)
        if last is None or (last.resource_class, last.total, last.reserved) != (
                desired.resource_class, desired.total, desired.reserved):
            self.ensure_resource_class(desired.resource_class)
            generation = self.set_inventory(desired.uuid, desired.resource_class, desired.total,
                                            desired.reserved, generation)
        if last is None or sorted(last.traits) != sorted(desired.traits):
            self.set_traits(desired.uuid, desired.traits, generation)

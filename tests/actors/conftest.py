# The `ray_cluster` fixture (three simulated hosts) lives in tests/conftest.py, so that every test
# directory shares one Ray cluster per pytest process.

import uuid

import pytest

from rayborg.actors.placement_client import PlacementClient
from rayborg.store.placement_state import provider_uuid


@pytest.fixture
def placement(placement_server) -> PlacementClient:
    """A client of the session's real Placement."""
    return PlacementClient(placement_server.url)


@pytest.fixture
def host(placement) -> str:
    """A compute node RP in Placement, as Nova would have made it, under a name no other test uses."""
    name = f"compute-{uuid.uuid4().hex[:8]}"
    resp = placement._request("POST", "/resource_providers", {"name": name, "uuid": provider_uuid(name)})
    assert resp.status_code == 200, resp.text
    return name

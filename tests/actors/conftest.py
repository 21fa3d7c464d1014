import pytest

from placement_server import PlacementServer


@pytest.fixture(scope="session")
def placement_server():
    server = PlacementServer().start()
    yield server
    server.stop()

import sys
from pathlib import Path

# runtime_helpers (start/stop the actor runtime) lives with the actor tests.
sys.path.insert(0, str(Path(__file__).parents[1] / "actors"))


import pytest  # noqa: E402

from glance_stub import GlanceStub  # noqa: E402


@pytest.fixture(scope="module")
def glance():
    stub = GlanceStub()
    yield stub
    stub.close()

"""Fixtures shared by every layer: databases (SQLite and a throwaway PostgreSQL), the store, the
API app and a test client."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from pgserver import PostgresServer  # noqa: E402

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def postgres_server():
    server = PostgresServer().start()
    yield server
    server.stop()


DATABASES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=DATABASES)
def database_url(request, tmp_path) -> str:
    """A fresh, empty database: a SQLite file, or a new database on the throwaway PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'rayborg.db'}"
    return request.getfixturevalue("postgres_server").create_database()


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'rayborg.db'}"


@pytest.fixture
def store(database_url):
    from rayborg.store.engine import Store
    from rayborg.store.migrate import upgrade

    s = Store(database_url)
    upgrade(s.engine)
    yield s
    s.dispose()


@pytest.fixture
def settings(database_url):
    from rayborg.settings import Settings

    return Settings(database_url=database_url, _env_file=None)


@pytest.fixture
def app(settings, store):
    from rayborg.api.app import create_app

    return create_app(settings, store)


@pytest.fixture
async def client(aiohttp_client, app):
    return await aiohttp_client(app)


@pytest.fixture(scope="session")
def placement_server():
    """A real OpenStack Placement on loopback (tests/service_starters.py installs it on first use)."""
    from placement_server import PlacementServer

    server = PlacementServer().start()
    yield server
    server.stop()


@pytest.fixture
def nova():
    """A real HTTP server playing Nova's os-server-external-events, recording every call."""
    from nova_recorder import NovaRecorder

    rec = NovaRecorder().start()
    yield rec
    rec.stop()


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """Three simulated hosts on this box (ray.cluster_utils.Cluster), each labelled with its name.
    One per pytest process: tests that use it share the `ray` xdist group."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_metrics_report_interval_ms", "1000")  # metrics tests scrape within seconds
    import ray
    from ray.cluster_utils import Cluster

    common = {"include_dashboard": False, "object_store_memory": 80 * 1024**2}
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "labels": {"rayborg-host": "host-a"}, **common})
    nodes = {"host-a": cluster.head_node}
    for name in ("host-b", "host-c"):
        nodes[name] = cluster.add_node(num_cpus=0, labels={"rayborg-host": name}, **common)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False, namespace="rayborg-tests")
    yield {"cluster": cluster, "nodes": nodes}
    ray.shutdown()
    cluster.shutdown()

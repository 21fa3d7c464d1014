"""A real `rayborg serve` (noauth, SQLite, no Ray actors) for the client tests, seeded with a device
tree through the store: the database file is shared with the server."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from factories import Tree, add_device
from servers import ServeProcess


@dataclass
class Served:
    url: str
    tree: Tree
    gpu: Tree


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from rayborg.store.engine import Store

    server = ServeProcess(tmp_path_factory.mktemp("compat"), "--no-actors").start()
    store = Store(server.database_url)  # the server has migrated it
    try:
        tree = add_device(store, handles_per_deployable=4)
        gpu = add_device(store, hostname="host2", type="GPU", vendor="0x10de", model="A100", rc="PGPU",
                         traits=(), driver_name="nvidia_gpu", bus=0x3b)
        yield Served(server.url, tree, gpu)
    finally:
        store.dispose()
        assert server.stop() == 0, server.log.read_text()

"""The CLI tests' runtime, as `rayborg serve` leaves it for the commands, and one way to run them."""

from __future__ import annotations

import os
from contextlib import contextmanager

import ray
from runtime_helpers import kill_runtime, start_runtime, wait_for  # tests/actors: on the path by conftest.py
from sqlmodel import select

from rayborg.actors.runtime_config import RuntimeConfig
from rayborg.cli import main
from rayborg.store import daemon_lease
from rayborg.store.tables import Deployable


@contextmanager
def cli_runtime(store, config: RuntimeConfig, deployables: int):
    """The runtime of `config` started and its `deployables` in the store; then what `rayborg serve`
    does at its start: hold the database's lease, recording its Ray cluster there, so that the
    commands find it through the database of their settings (RAYBORG_DATABASE_URL). On exit: the
    variable unset, the lease released, the actors removed, the store disposed."""
    start_runtime(config)
    wait_for(lambda: store.query(lambda s: len(list(s.exec(select(Deployable))))) == deployables,
             what=f"{deployables} deployables")
    lease = daemon_lease.acquire(store, api_host="127.0.0.1", api_port=1, database_url=store.url)
    lease.update(ray_address=ray.get_runtime_context().gcs_address)
    os.environ["RAYBORG_DATABASE_URL"] = store.url
    try:
        yield
    finally:
        del os.environ["RAYBORG_DATABASE_URL"]
        lease.release()
        kill_runtime()
        store.dispose()


def run(capsys, *argv) -> tuple[int, str, str]:
    """`rayborg ARGV...` in this process: (exit code, stdout, stderr)."""
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err

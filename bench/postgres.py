"""A throwaway PostgreSQL for the benchmark (as tests/pgserver.py starts one for the suite, without
importing tests/): initdb in a temp dir, a free loopback port, stopped and removed at the end. Unlike
the suite's it keeps a default install's durability (fsync, synchronous_commit, full_page_writes on:
every commit waits for its WAL flush), so that binds/s is what an operator's PostgreSQL gives; only
max_connections is raised (200: front doors, binders, PlacementSync, the bench's own). Runs as the `postgres` user
when we are root. `unavailable()` says why none can start here (no binaries, no psycopg), else None.

    with Postgres() as pg:
        url = pg.create_database()   # postgresql+psycopg://rayborg@127.0.0.1:PORT/bench_...
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

BIN_CANDIDATES = [f"/usr/lib/postgresql/{v}/bin" for v in (17, 16, 15)]


def pg_bin() -> Path | None:
    for cand in BIN_CANDIDATES:
        if (Path(cand) / "initdb").exists() and (Path(cand) / "pg_ctl").exists():
            return Path(cand)
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


def unavailable() -> str | None:
    """Why PostgreSQL cannot run here, or None when it can."""
    if pg_bin() is None:
        return "PostgreSQL binaries (initdb, pg_ctl) not found (apt-get install postgresql)"
    if importlib.util.find_spec("psycopg") is None:
        return "psycopg is not installed (pip install 'psycopg[binary]')"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: initdb refuses root"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    def __init__(self) -> None:
        why = unavailable()
        if why:
            raise RuntimeError(why)
        self.bin = pg_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="rayborg-bench-pg-"))
        self.port = _free_port()
        self.user = "postgres" if os.geteuid() == 0 else None
        self.started = False

    def _run(self, *args: str) -> None:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        out = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=120)
        if out.returncode:
            raise RuntimeError(f"{args[0]} exit {out.returncode}: {out.stderr.strip()[-500:]}")

    def start(self) -> Postgres:
        if self.user:
            shutil.chown(self.dir, self.user)
        data = self.dir / "data"
        try:
            self._run("initdb", "-D", str(data), "-U", "rayborg", "--auth=trust", "-E", "UTF8", "--no-sync")
            opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.dir} "
                    "-c max_connections=200")
            self._run("pg_ctl", "-D", str(data), "-o", opts, "-l", str(self.dir / "log"), "-w", "start")
        except Exception:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise
        self.started = True
        return self

    def stop(self) -> None:
        try:
            if self.started:
                self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop")
        finally:
            self.started = False
            shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://rayborg@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A fresh empty database; returns its URL."""
        import psycopg

        name = f"bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"postgresql://rayborg@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def __enter__(self) -> Postgres:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

"""A throwaway PostgreSQL server for the test run: initdb in a temp dir, a free loopback port,
stopped (and its files removed) at the end. Runs as the `postgres` user when we are root."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from netutil import free_port

PG_BIN_CANDIDATES = ["/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin"]


def _pg_bin() -> Path | None:
    for cand in PG_BIN_CANDIDATES:
        if (Path(cand) / "initdb").exists():
            return Path(cand)
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None



class PostgresServer:
    """`also_on`: one more address to listen on (a test bridge's), trusting clients of `network` there."""

    def __init__(self, also_on: str | None = None, network: str | None = None) -> None:
        self.also_on, self.network = also_on, network
        self.bin = _pg_bin()
        if self.bin is None:
            raise RuntimeError("PostgreSQL binaries (initdb, pg_ctl) not found; .ci/run installs them")
        self.dir = Path(tempfile.mkdtemp(prefix="rayborg-pg-"))
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else None

    def _run(self, *args: str) -> None:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)

    def start(self) -> "PostgresServer":
        if self.user:
            shutil.chown(self.dir, self.user)
        data = self.dir / "data"
        self._run("initdb", "-D", str(data), "-U", "rayborg", "--auth=trust", "-E", "UTF8", "--no-sync")
        listen = "127.0.0.1"
        if self.also_on:
            listen += f",{self.also_on}"
            with open(data / "pg_hba.conf", "a") as hba:
                hba.write(f"host all all {self.network} trust\n")
        opts = (f"-c listen_addresses={listen} -p {self.port} -c unix_socket_directories={self.dir} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run("pg_ctl", "-D", str(data), "-o", opts, "-l", str(self.dir / "log"), "-w", "start")
        return self

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, database: str = "postgres", host: str = "127.0.0.1") -> str:
        return f"postgresql+psycopg://rayborg@{host}:{self.port}/{database}"

    def create_database(self) -> str:
        """A fresh empty database for one test; returns its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"postgresql://rayborg@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

"""Run `rayborg serve` as a real subprocess on a free port, for end-to-end and client tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from netutil import free_port


class ServeProcess:
    def __init__(self, tmp_path: Path, *args: str, env: dict[str, str] | None = None):
        self.port = free_port()
        self.db = tmp_path / "serve.db"
        self.log = tmp_path / "serve.log"
        self.url = f"http://127.0.0.1:{self.port}"
        self.database_url = f"sqlite:///{self.db}"
        self.args = ["serve", "--port", str(self.port), "--database-url", self.database_url, *args]
        (tmp_path / "none.toml").touch()  # an empty config: the user's own file stays out of the tests
        self.env = dict(os.environ, RAYBORG_CONFIG=str(tmp_path / "none.toml"), RAY_USAGE_STATS_ENABLED="0",
                        **(env or {}))
        self.env.pop("RAY_ADDRESS", None)
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> "ServeProcess":
        self._logfile = open(self.log, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "rayborg", *self.args], env=self.env,
                                     stdout=self._logfile, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rayborg serve exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/v2", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"rayborg serve did not answer within {timeout}s:\n{self.log.read_text()}")

    def stop(self, timeout: float = 30) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._logfile.close()
        return self.proc.returncode

    def stop_group(self, timeout: float = 60) -> int | None:
        """SIGTERM to the whole process group, as a terminal's Ctrl-C or systemd's stop does: Ray's
        own processes die at the same time as serve. The exit code, or None if serve hung."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._logfile.close()
        return code

"""Start/stop a real OpenStack Placement (from PyPI) on loopback through shared/tools/run-placement."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from netutil import free_port

REPO = Path(__file__).resolve().parent.parent


def _shared_tools() -> Path:
    env = os.environ.get("RAYBORG_SHARED")
    return Path(env) / "tools" if env else REPO.parent / "shared" / "tools"



class PlacementServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.script = _shared_tools() / "run-placement"
        self.url = f"http://127.0.0.1:{self.port}"

    def _run(self, *args: str) -> str:
        out = subprocess.run(["bash", str(self.script), str(self.port), *args], check=True,
                             capture_output=True, text=True, timeout=600)
        return out.stdout.strip()

    def start(self) -> "PlacementServer":
        self.url = self._run("--background")
        return self

    def restart(self, keep_db: bool = True) -> None:
        env_keep = os.environ.get("PLACEMENT_KEEP_DB")
        os.environ["PLACEMENT_KEEP_DB"] = "1" if keep_db else "0"
        try:
            self._run("--background")
        finally:
            if env_keep is None:
                os.environ.pop("PLACEMENT_KEEP_DB", None)
            else:
                os.environ["PLACEMENT_KEEP_DB"] = env_keep

    def stop(self) -> None:
        self._run("--stop")

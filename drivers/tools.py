"""Running vendor tools (fpgaconf, xbmgmt, aocl...) with a timeout and errors that say what failed."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence

from rayborg.drivers.base import ProgrammingError

DEFAULT_TIMEOUT = 600.0  # real FPGA loads take minutes; a hung tool must still end


def run_tool(argv: Sequence[str], *, device: str, timeout: float = DEFAULT_TIMEOUT,
             env: Mapping[str, str] | None = None) -> str:
    """Run `argv`, return its stdout; raise `ProgrammingError` naming device and tool otherwise."""
    tool = str(argv[0])
    try:
        proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout,
                              env=dict(env) if env is not None else None, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise ProgrammingError("vendor tool not found", device=device, tool=tool) from None
    except PermissionError:
        raise ProgrammingError("vendor tool not executable", device=device, tool=tool) from None
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        raise ProgrammingError(f"vendor tool hung: killed after {timeout:g}s", device=device, tool=tool,
                               stderr=stderr) from None
    if proc.returncode != 0:
        raise ProgrammingError("vendor tool failed", device=device, tool=tool, exit_code=proc.returncode,
                               stderr=proc.stderr)
    return proc.stdout

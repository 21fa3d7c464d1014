"""Running vendor tools (fpgaconf, xbmgmt, aocl...) with a timeout and errors that say what failed."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence

from rayborg.drivers.base import ProgrammingError

DEFAULT_TIMEOUT = 600.0  # real FPGA loads take minutes; a hung tool must still end


def _text(data: bytes | str | None) -> str:
    # vendor tools print progress bars and odd encodings: never let decoding turn a result into a crash
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the tool's whole session: wrappers (aocl, xbmgmt) leave children that would go on
    flashing, and hold our pipes open, after the tool itself is killed."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.kill()


def run_tool(argv: Sequence[str], *, device: str, timeout: float = DEFAULT_TIMEOUT,
             env: Mapping[str, str] | None = None) -> str:
    """Run `argv`, return its stdout; raise `ProgrammingError` naming device and tool otherwise."""
    tool = str(argv[0])
    try:
        proc = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=dict(env) if env is not None else None,
                                start_new_session=True)
    except FileNotFoundError:
        raise ProgrammingError("vendor tool not found", device=device, tool=tool) from None
    except PermissionError:
        raise ProgrammingError("vendor tool not executable", device=device, tool=tool) from None
    except OSError as exc:  # e.g. ENOEXEC: a script without a #! line, a binary for another arch
        raise ProgrammingError(f"vendor tool could not run: {exc.strerror or exc}", device=device,
                               tool=tool) from None
    with proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            _kill_group(proc)
            raise ProgrammingError(f"vendor tool hung: killed after {timeout:g}s", device=device, tool=tool,
                                   stderr=_text(exc.stderr)) from None
    if proc.returncode != 0:
        raise ProgrammingError("vendor tool failed", device=device, tool=tool, exit_code=proc.returncode,
                               stderr=_text(stderr))
    return _text(stdout)

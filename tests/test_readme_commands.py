"""The README's two opening commands and .ci/run agree: the first starts the daemon with bare
`rayborg serve` (the embedded defaults), the second runs the suite, and .ci/run ends with that same
command so that its exit code is pytest's."""

from __future__ import annotations

import os
import re
import shlex
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _commands(lines: list[str]) -> list[str]:
    """Shell lines without comments (whole-line or trailing) and blank lines."""
    out = []
    for line in lines:
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if line:
            out.append(line)
    return out


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"^```bash\n(.*?)^```", text, re.S | re.M)
    assert block, "README.md has no ```bash block"
    return _commands(block.group(1).splitlines())


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_readme_opens_with_exactly_two_commands():
    assert len(readme_commands()) == 2


def test_first_command_installs_and_starts_bare_rayborg_serve():
    steps = [shlex.split(step) for step in readme_commands()[0].split("&&")]
    assert steps[-1] == ["rayborg", "serve"]  # no flags: SQLite in the data dir, noauth, 127.0.0.1:6666
    assert steps[0][:2] == ["pip", "install"] and "." in steps[0]
    assert pyproject()["project"]["scripts"]["rayborg"] == "rayborg.cli:main"


def test_second_command_is_the_last_line_of_ci_run():
    script = (ROOT / ".ci" / "run").read_text()
    assert _commands(script.splitlines())[-1] == readme_commands()[1]


def test_ci_run_fails_when_the_suite_fails():
    """The test command is the script's last line, under `set -e -o pipefail`: the script's exit
    code is pytest's (an install failure stops it first)."""
    path = ROOT / ".ci" / "run"
    assert os.access(path, os.X_OK) and path.read_text().startswith("#!/usr/bin/env bash\n")
    options = next(line for line in _commands(path.read_text().splitlines()) if line.startswith("set ")).split()
    assert "e" in options[1] and options[1].startswith("-") and "pipefail" in options


def test_test_command_installs_what_its_options_need():
    steps = [shlex.split(step) for step in readme_commands()[1].split("&&")]
    install, run = steps[0], steps[-1]
    assert install[:2] == ["pip", "install"] and ".[test]" in install
    assert run[:3] == ["python", "-m", "pytest"]
    extras = " ".join(pyproject()["project"]["optional-dependencies"]["test"])
    if "-n" in run or "--dist" in run:
        assert "pytest-xdist" in extras
    assert "pytest-asyncio" in extras and "pytest-aiohttp" in extras

"""Which way imports run (docs/architecture.md): SQL only under store/, the store below the actors
and the front door, the drivers below everything, the client package never inside the server.

Imports are read with `ast` (also those inside functions), so the rules hold without importing
anything. A file that still breaks a rule is allowed only if listed in ALLOWED with the reason; an
entry that no longer matches a real import fails too, so the list can only shrink.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SERVER_FOLDERS = ("actors", "api", "drivers", "store", "rayborg")
SQL = ("sqlalchemy", "sqlmodel")

# (folder, forbidden import prefixes, what the rule is for)
RULES = [
    ("actors", SQL, "SQL lives in store/"),
    ("api", SQL, "SQL lives in store/"),
    ("drivers", SQL, "SQL lives in store/"),
    ("rayborg", SQL, "SQL lives in store/"),
    ("actors", ("rayborg.python_api",), "the client package is no server code"),
    ("api", ("rayborg.python_api",), "the client package is no server code"),
    ("store", ("rayborg.python_api",), "the client package is no server code"),
    ("drivers", ("rayborg.python_api",), "the client package is no server code"),
    ("store", ("rayborg.actors", "rayborg.api"), "the store is below the actors and the front door"),
    ("drivers", ("rayborg.actors", "rayborg.store", "rayborg.api"), "drivers know only the host"),
]

# (file, imported module): why it is still here. Remove an entry when its import goes.
ALLOWED: dict[tuple[str, str], str] = {
}


def imports_of(path: Path) -> set[str]:
    """Every module `path` imports, anywhere in the file, as an absolute dotted name."""
    folders = path.relative_to(REPO).parts[:-1]
    package = ".".join(folders if folders[0] == "rayborg" else ("rayborg", *folders))
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = package.rsplit(".", node.level - 1)[0]
                found.add(f"{base}.{node.module}" if node.module else base)
            else:
                found.add(node.module)
    return found


def _matches(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def violations(rules=RULES) -> set[tuple[str, str]]:
    out = set()
    for folder, forbidden, _why in rules:
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if rel.startswith("store/migrations/"):
                continue
            for module in imports_of(path):
                if any(_matches(module, prefix) for prefix in forbidden):
                    out.add((rel, module))
    return out


def test_no_new_import_breaks_a_rule():
    new = sorted(violations() - set(ALLOWED))
    assert not new, "imports against docs/architecture.md's rules:\n" + "\n".join(
        f"  {file} imports {module}" for file, module in new)


def test_every_allowed_import_still_exists():
    stale = sorted(set(ALLOWED) - violations())
    assert not stale, "fixed: remove from ALLOWED:\n" + "\n".join(f"  {f} -> {m}" for f, m in stale)


@pytest.mark.parametrize("folder, line, module", [
    ("actors", "from sqlmodel import select", "sqlmodel"),
    ("api", "    import sqlalchemy.orm", "sqlalchemy.orm"),
    ("actors", "from rayborg.python_api import ops", "rayborg.python_api"),
    ("store", "from rayborg.actors.binder import Binder", "rayborg.actors.binder"),
    ("store", "from ..api import app", "rayborg.api"),
    ("drivers", "from rayborg.store.tables import Device", "rayborg.store.tables"),
    ("api", "from rayborg.python_api.selector import matches", "rayborg.python_api.selector"),
    ("store", "from ..python_api import client", "rayborg.python_api"),
])
def test_a_forbidden_import_is_caught(tmp_path, monkeypatch, folder, line, module):
    """The checker itself: an import added to a file of `folder` is reported (also inside a function
    and as a relative import)."""
    (tmp_path / folder).mkdir()
    (tmp_path / folder / "new_module.py").write_text(f"def f():\n    {line.strip()}\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert violations() == {(f"{folder}/new_module.py", module)}


def test_allowed_imports_point_at_server_files():
    for file, _module in ALLOWED:
        assert file.split("/")[0] in SERVER_FOLDERS and (REPO / file).is_file(), file

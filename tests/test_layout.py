"""Tests mirror the layout: every module of store/ and actors/ has tests/<folder>/test_<module>.py,
unless listed below. ELSEWHERE names where a module is tested under another name, NOT_NEEDED why a
module needs no test of its own, and TO_WRITE the files still missing; that list may only shrink (a
listed module whose test file appeared fails, so its entry is removed)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FOLDERS = ("store", "actors")

# module: the test file(s) that test it under another name
ELSEWHERE: dict[str, str] = {
    "store/migrate.py": "tests/store/test_migrations.py",
    "actors/metrics.py": "tests/metrics/test_metrics_endpoint.py",
    "actors/unified_limits.py": "tests/auth/test_quota_keystone.py",
    "actors/bitstream_check.py": "tests/python_api/test_bitstream_check.py",
}

# module: why it needs no test file of its own
NOT_NEEDED: dict[str, str] = {
    "store/tables.py": "declarations; tests/store/test_migrations.py checks them against the schema",
    "store/errors.py": "exception classes only",
    "actors/runtime_config.py": "a settings dataclass and actor names",
}

# modules whose test file is still to be written (their behaviour is covered by the runtime tests:
# tests/actors/test_runtime.py, test_faults.py, test_vgpu.py, ...)
TO_WRITE: set[str] = set()


def modules(repo: Path = REPO) -> list[str]:
    return sorted(p.relative_to(repo).as_posix() for folder in FOLDERS for p in (repo / folder).glob("*.py")
                  if p.name != "__init__.py")


def mirrored(module: str, repo: Path = REPO) -> Path:
    folder, name = module.split("/")
    return repo / "tests" / folder / f"test_{name}"


def unmirrored(repo: Path = REPO) -> list[str]:
    return [m for m in modules(repo)
            if not mirrored(m, repo).is_file() and m not in ELSEWHERE | NOT_NEEDED and m not in TO_WRITE]


def test_every_module_has_its_own_test_file():
    missing = unmirrored()
    assert not missing, "give each a test file of its own:\n" + "\n".join(
        f"  {m}: {mirrored(m).relative_to(REPO)}" for m in missing)


def test_the_lists_name_real_modules_and_files():
    listed = [*ELSEWHERE, *NOT_NEEDED, *TO_WRITE]
    assert len(listed) == len(set(listed)), "a module is listed twice"
    assert set(listed) <= set(modules()), f"no such module: {sorted(set(listed) - set(modules()))}"
    assert all((REPO / test).is_file() for test in ELSEWHERE.values())


@pytest.mark.parametrize("module", sorted(TO_WRITE | set(ELSEWHERE) | set(NOT_NEEDED)))
def test_an_exemption_ends_when_the_mirrored_file_exists(module):
    assert not mirrored(module).is_file(), f"{mirrored(module).relative_to(REPO)} exists: drop {module} from the lists"


def test_a_module_without_its_test_file_is_caught(tmp_path):
    for folder in FOLDERS:
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "__init__.py").write_text("")
        (tmp_path / "tests" / folder).mkdir(parents=True)
    (tmp_path / "store" / "new_module.py").write_text("")
    (tmp_path / "actors" / "tested.py").write_text("")
    (tmp_path / "tests" / "actors" / "test_tested.py").write_text("")
    assert unmirrored(tmp_path) == ["store/new_module.py"]

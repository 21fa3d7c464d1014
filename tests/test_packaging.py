"""pyproject.toml's static package mapping covers the source tree: a new sub-package that is not
listed would be missing from wheels (and from non-editable installs) while every test still passes
against the checkout."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _setuptools() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]


def folder_of(package: str, package_dir: dict[str, str]) -> Path:
    """Where setuptools looks for `package`: the longest mapped prefix, then the rest as folders."""
    owner = max((p for p in package_dir if package == p or package.startswith(p + ".")), key=len)
    return REPO / package_dir[owner] / Path(*package[len(owner):].split(".")[1:])


def packages_on_disk(package_dir: dict[str, str]) -> set[str]:
    found = set()
    for name, folder in package_dir.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder).parts
            found.add(".".join((name, *rel)))
    return found


def test_every_package_on_disk_is_listed():
    cfg = _setuptools()
    missing = packages_on_disk(cfg["package-dir"]) - set(cfg["packages"])
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {sorted(missing)}"


def test_every_listed_package_exists():
    cfg = _setuptools()
    for package in cfg["packages"]:
        assert (folder_of(package, cfg["package-dir"]) / "__init__.py").is_file(), package


def test_package_data_exists():
    cfg = _setuptools()
    for package, patterns in cfg["package-data"].items():
        for pattern in patterns:
            assert list(folder_of(package, cfg["package-dir"]).glob(pattern)), (package, pattern)


def test_no_setup_py():
    """The mapping has one home; a setup.py would compute another."""
    assert not (REPO / "setup.py").exists()

"""Dependencies point inward: domain/ and application/ import only the standard library."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INNER = {"domain": {"domain"}, "application": {"domain", "application"}}
# Standard-library modules that do I/O still do not belong in the core.
IO_MODULES = {"socket", "ftplib", "http", "urllib", "sqlite3", "subprocess", "smtplib", "ssl"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(INNER))
def test_the_core_imports_nothing_but_the_standard_library(package: str) -> None:
    offenders = {}
    for path in sorted((REPO / package).rglob("*.py")):
        for name in imported_modules(path):
            own = name in INNER[package]
            stdlib = name in sys.stdlib_module_names and name not in IO_MODULES
            if not (own or stdlib or name == "__future__"):
                offenders[f"{path.relative_to(REPO)}"] = name
    assert offenders == {}


def test_only_entrypoints_know_the_adapters() -> None:
    for package in ("domain", "application", "adapters"):
        for path in (REPO / package).rglob("*.py"):
            assert "entrypoints" not in imported_modules(path), path

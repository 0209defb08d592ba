"""Dependencies point inward: domain/ and application/ import only the standard library.

The layers are imported by their installed names, `s3_events_handler.<layer>`; a bare
`domain` would be another service's package (or a second copy of ours).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "s3_events_handler"
LAYERS = ("domain", "application", "adapters", "entrypoints")
INNER = {"domain": {"domain"}, "application": {"domain", "application"}}
# Standard-library modules that do I/O still do not belong in the core.
IO_MODULES = {"socket", "ftplib", "http", "urllib", "sqlite3", "subprocess", "smtplib", "ssl"}


def imported_modules(path: Path) -> set[str]:
    """Top-level names imported by `path`; our own layers by their layer name (`domain`)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    modules: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.append(node.module)
    names = set()
    for module in modules:
        parts = module.split(".")
        names.add(parts[1] if parts[0] == PACKAGE and len(parts) > 1 else parts[0])
    return names


def bare_layer_imports(path: Path) -> set[str]:
    """Imports of a layer by its folder name rather than as `s3_events_handler.<layer>`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] in LAYERS)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.update({node.module} if node.module.split(".")[0] in LAYERS else set())
    return found


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


def test_every_layer_is_imported_by_its_installed_name() -> None:
    offenders = {
        str(path.relative_to(REPO)): bare_layer_imports(path)
        for folder in (*LAYERS, "tests")
        for path in sorted((REPO / folder).rglob("*.py"))
        if bare_layer_imports(path)
    }
    assert offenders == {}


def test_the_library_imports_nothing_of_the_tests() -> None:
    """The test servers and the bench (`tests/bench/`) are neither installed nor in the image."""
    offenders = {
        str(path.relative_to(REPO))
        for folder in LAYERS
        for path in sorted((REPO / folder).rglob("*.py"))
        if "tests" in imported_modules(path)
    }
    assert offenders == set()

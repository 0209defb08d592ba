"""The packaging settings that must move together."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_mypy_reads_the_link_tree_of_this_version() -> None:
    """setuptools names the strict editable link tree after the version: bump both."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    version = project["project"]["version"]
    expected = f"$MYPY_CONFIG_FILE_DIR/build/__editable__.s3_events_handler-{version}-py3-none-any"
    assert project["tool"]["mypy"]["mypy_path"] == expected


def test_every_layer_ships_its_py_typed_marker() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    for folder in project["tool"]["setuptools"]["package-dir"].values():
        assert (REPO / folder / "py.typed").is_file(), folder

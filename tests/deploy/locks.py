"""The lock files: what they pin (.ci/lock compiles them; docs/operations.md, "Updating the
lock")."""

from __future__ import annotations

import re
from pathlib import Path

from tests.deploy.manifests import REPO

RUNTIME_LOCK = REPO / "requirements.lock"
DEV_LOCK = REPO / "requirements-dev.lock"
BUILD_LOCK = REPO / "requirements-build.lock"
RECONCILE_LOCK = REPO / "requirements-reconcile.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def normalized(name: str) -> str:
    """A distribution's name as PyPI compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lock: Path) -> dict[str, str]:
    """Every `name==version` in `lock`, by normalized name."""
    found = {}
    for line in lock.read_text().splitlines():
        match = PIN.match(line)
        if match:
            found[normalized(match.group(1))] = match.group(2)
    return found


def requirements(lock: Path) -> list[str]:
    """Each requirement of `lock` as one string (its continuation lines joined), comments
    left out."""
    joined = re.sub(r"\\\n", " ", lock.read_text())
    return [
        line for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]

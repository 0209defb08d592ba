"""Shared fixtures: the golden examples, and the local RabbitMQ broker (skipped or required)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO.parent / "shared" / "examples"
BROKER_HOST = os.environ.get("TEST_BROKER_HOST", "127.0.0.1")
BROKER_PORT = int(os.environ.get("TEST_BROKER_PORT", "5672"))


def _broker_answers() -> bool:
    try:
        with socket.create_connection((BROKER_HOST, BROKER_PORT), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def examples() -> Path:
    """`../shared/examples/`: the golden events and outputs."""
    if not EXAMPLES.is_dir():
        pytest.fail(f"golden examples not found at {EXAMPLES}")
    return EXAMPLES


@pytest.fixture(scope="session")
def broker() -> tuple[str, int]:
    """The local broker's address; skips without one unless REQUIRE_BROKER=1, then fails."""
    if not _broker_answers():
        reason = f"no RabbitMQ broker answers on {BROKER_HOST}:{BROKER_PORT}"
        if os.environ.get("REQUIRE_BROKER") == "1":
            pytest.fail(f"{reason} (REQUIRE_BROKER=1)")
        pytest.skip(reason)
    return BROKER_HOST, BROKER_PORT

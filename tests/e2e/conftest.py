"""End-to-end fixtures: the consumer process among loopback fakes of everything it talks to."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.service import RunningService


@pytest.fixture
def service(tmp_path: Path, broker: tuple[str, int]) -> Iterator[RunningService]:
    """Fakes started and the broker pre-declared as today's service leaves it; no consumer yet."""
    running = RunningService(workdir=tmp_path, broker=broker)
    running.start_fakes()
    try:
        yield running
    finally:
        running.close()

"""What the adapter tests against the HTTP fakes share: a session, and a record of sleeps."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@pytest.fixture
def sleeps() -> list[float]:
    """The `sleep` the adapters are given appends here instead of sleeping."""
    return []

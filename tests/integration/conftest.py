"""What the adapter tests share: a session, a record of sleeps, and queue names on the broker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from s3_events_handler.adapters.rabbitmq.connection import BrokerSettings
from tests.support import amqp


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@pytest.fixture
def settings(broker: tuple[str, int]) -> Iterator[BrokerSettings]:
    """Fresh queue and exchange names, like production (both exchanges set); removed afterwards."""
    settings = amqp.settings_like_production(*broker, "rmq")
    yield settings
    amqp.delete_topology(settings)


@pytest.fixture
def sleeps() -> list[float]:
    """The `sleep` the adapters are given appends here instead of sleeping."""
    return []

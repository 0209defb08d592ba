"""The `TransferRequests` port: the in-memory fake, and the RabbitMQ adapter on the broker."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import pytest

from s3_events_handler.adapters.memory import InMemoryTransferRequests
from s3_events_handler.adapters.rabbitmq.io_thread import BrokerConnection
from s3_events_handler.adapters.rabbitmq.transfer_requests import (
    AmqpTransferRequests,
    transfer_request_body,
)
from s3_events_handler.domain.ports import TransferRequests
from tests.support import amqp
from tests.support.sidecars import golden_transfer_request


class Inbox(Protocol):
    @property
    def requests(self) -> TransferRequests: ...

    def arrived(self, count: int) -> list[tuple[str, Any]]:
        """What the file-transfer service receives, in order: message_id and JSON body."""
        ...


class InMemoryInbox:
    def __init__(self) -> None:
        self.requests = self.fake = InMemoryTransferRequests()

    def arrived(self, count: int) -> list[tuple[str, Any]]:
        return [
            (request.message_id, json.loads(transfer_request_body(request)))
            for request in self.fake.published
        ]


class RabbitMqInbox:
    def __init__(self, connection: BrokerConnection) -> None:
        self.settings = connection.settings
        self.requests = AmqpTransferRequests.for_settings(connection)

    def arrived(self, count: int) -> list[tuple[str, Any]]:
        settings = self.settings
        messages = amqp.wait_for_messages(
            settings.host, settings.port, settings.transfer_queue, count
        )
        return [(message.properties.message_id, message.json()) for message in messages]


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=pytest.mark.broker)])
def inbox(request: pytest.FixtureRequest) -> Iterator[Inbox]:
    if request.param == "memory":
        yield InMemoryInbox()
        return
    host, port = request.getfixturevalue("broker")
    settings = amqp.settings_like_production(host, port, "contract")
    connection = BrokerConnection(settings)
    try:
        connection.open()
        yield RabbitMqInbox(connection)
    finally:
        connection.close()
        amqp.delete_topology(settings)


def test_the_golden_request_arrives_as_the_golden_json_named_for_its_sidecar(
    inbox: Inbox, examples: Path
) -> None:
    inbox.requests.publish(golden_transfer_request())
    golden = json.loads((examples / "transfer-request-essence.json").read_text())
    assert inbox.arrived(1) == [("k98z0d4w1q", golden)]


def test_requests_arrive_in_the_order_they_were_published(inbox: Inbox) -> None:
    names = [f"pid{n:07d}" for n in range(5)]
    for name in names:
        request = golden_transfer_request()
        inbox.requests.publish(
            replace(
                request,
                source=replace(request.source, key=f"{name}.MXF"),
                destination_path=f"/mnt/STORAGE/INGEST/SIDECAR/VRT/TAPE-SHARE-EVENTS/{name}.MXF",
                message_id=name,
            )
        )
    arrived = inbox.arrived(len(names))
    assert [message_id for message_id, _ in arrived] == names
    assert [body["source"]["object"]["key"] for _, body in arrived] == [f"{n}.MXF" for n in names]

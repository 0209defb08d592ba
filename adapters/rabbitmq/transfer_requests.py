"""The `TransferRequests` port on RabbitMQ (contract §3.4)."""

from __future__ import annotations

import json

from s3_events_handler.adapters.rabbitmq.io_thread import BrokerConnection
from s3_events_handler.domain.model import TransferRequest
from s3_events_handler.domain.ports import TransferRequests


def transfer_request_body(request: TransferRequest) -> bytes:
    """The file-transfer service's message body (contract §3.4)."""
    source = request.source
    message = {
        "source": {
            "domain": {"name": source.domain},
            "bucket": {"name": source.bucket},
            "object": {"key": source.key},
        },
        "destination": {"path": request.destination_path, "host": request.destination_host},
    }
    return json.dumps(message).encode("utf-8")


class AmqpTransferRequests(TransferRequests):
    """The `TransferRequests` port on RabbitMQ: persistent, mandatory, confirmed
    (`BrokerConnection.publish`)."""

    def __init__(self, connection: BrokerConnection, *, exchange: str, routing_key: str) -> None:
        self._connection = connection
        self._exchange = exchange
        self._routing_key = routing_key

    @classmethod
    def for_settings(cls, connection: BrokerConnection) -> AmqpTransferRequests:
        """FILETRANSFER_EXCHANGE, FILETRANSFER_QUEUE as routing key ("" = default exchange)."""
        settings = connection.settings
        return cls(
            connection, exchange=settings.transfer_exchange, routing_key=settings.transfer_queue
        )

    def publish(self, request: TransferRequest) -> None:
        self._connection.publish(
            "transfer request",
            self._exchange,
            self._routing_key,
            transfer_request_body(request),
            message_id=request.message_id,
            correlation_id=request.correlation_id,
        )

"""The `TransferRequests` port on RabbitMQ (contract §3.4)."""

from __future__ import annotations

import json
import logging

import pika
import pika.exceptions

from s3_events_handler.adapters.rabbitmq.connection import PERSISTENT, describe
from s3_events_handler.adapters.rabbitmq.io_thread import BrokerConnection
from s3_events_handler.domain.errors import ServiceUnavailable, System
from s3_events_handler.domain.model import TransferRequest
from s3_events_handler.domain.ports import TransferRequests

log = logging.getLogger(__name__)

JSON = "application/json"


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
    """The `TransferRequests` port on RabbitMQ: persistent, mandatory, confirmed."""

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
        body = transfer_request_body(request)
        properties = pika.BasicProperties(
            delivery_mode=PERSISTENT,
            content_type=JSON,
            correlation_id=request.correlation_id,
            message_id=request.message_id,
        )

        def publish_on_io_thread() -> None:
            self._connection.publish(self._exchange, self._routing_key, body, properties)

        target = f"exchange {self._exchange!r} with routing key {self._routing_key!r}"
        try:
            self._connection.run_on_io_thread(publish_on_io_thread)
        except pika.exceptions.UnroutableError as error:
            raise ServiceUnavailable(
                f"transfer request reached no queue via {target}", system=System.BROKER
            ) from error
        except pika.exceptions.NackError as error:
            raise ServiceUnavailable(
                f"broker refused the transfer request via {target}", system=System.BROKER
            ) from error
        except (pika.exceptions.AMQPError, OSError) as error:
            secret = self._connection.settings.password
            raise ServiceUnavailable(
                f"transfer request not published via {target}: {describe(error, secret)}",
                system=System.BROKER,
            ) from error
        log.debug(
            "transfer request %s published via %s (correlation id %s)",
            request.message_id,
            target,
            request.correlation_id,
        )

"""The `IncomingEvents` port on RabbitMQ: an event this service makes itself (reconcile's,
contract §8) goes to the incoming queue as the gateway's would."""

from __future__ import annotations

import json
import logging

import pika
import pika.exceptions

from s3_events_handler.adapters.rabbitmq.connection import PERSISTENT, describe
from s3_events_handler.adapters.rabbitmq.io_thread import BrokerConnection
from s3_events_handler.domain.bucket import Resubmission
from s3_events_handler.domain.errors import ServiceUnavailable
from s3_events_handler.domain.ports import IncomingEvents

log = logging.getLogger(__name__)


class AmqpIncomingEvents(IncomingEvents):
    """Straight to the incoming queue through the default exchange, as a split or a replay
    goes back: persistent, mandatory and confirmed (`BrokerConnection.publish`). The
    message id and correlation id are the event's request id."""

    def __init__(self, connection: BrokerConnection) -> None:
        self._connection = connection
        self._queue = connection.settings.incoming_queue

    def publish(self, event: Resubmission) -> None:
        body = json.dumps(event.notification(), ensure_ascii=False).encode("utf-8")
        properties = pika.BasicProperties(
            delivery_mode=PERSISTENT,
            content_type="application/json",
            message_id=event.request_id,
            correlation_id=event.request_id,
        )

        def publish_on_io_thread() -> None:
            self._connection.publish("", self._queue, body, properties)

        try:
            self._connection.run_on_io_thread(publish_on_io_thread)
        except pika.exceptions.UnroutableError as error:
            raise ServiceUnavailable(f"no queue {self._queue!r} took the event") from error
        except pika.exceptions.NackError as error:
            raise ServiceUnavailable(f"the broker refused the event for {self._queue}") from error
        except (pika.exceptions.AMQPError, OSError) as error:
            secret = self._connection.settings.password
            raise ServiceUnavailable(
                f"event not published to {self._queue}: {describe(error, secret)}"
            ) from error
        log.debug("published %s to %s", event.request_id, self._queue)


__all__ = ["AmqpIncomingEvents"]

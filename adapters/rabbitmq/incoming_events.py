"""The `IncomingEvents` port on RabbitMQ: an event this service makes itself (reconcile's,
contract §8) goes to the incoming queue as the gateway's would."""

from __future__ import annotations

import json

from s3_events_handler.adapters.rabbitmq.io_thread import BrokerConnection
from s3_events_handler.domain.bucket import Resubmission
from s3_events_handler.domain.ports import IncomingEvents


class AmqpIncomingEvents(IncomingEvents):
    """Straight to the incoming queue through the default exchange, as a split or a replay
    goes back: persistent, mandatory and confirmed (`BrokerConnection.publish`). The
    message id and correlation id are the event's request id."""

    def __init__(self, connection: BrokerConnection) -> None:
        self._connection = connection

    def publish(self, event: Resubmission) -> None:
        self._connection.publish(
            "event",
            "",
            self._connection.settings.incoming_queue,
            json.dumps(event.notification(), ensure_ascii=False).encode("utf-8"),
            message_id=event.request_id,
            correlation_id=event.request_id,
        )

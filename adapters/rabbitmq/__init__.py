"""RabbitMQ: the broker connection, the transfer-request publisher and the consumer loop."""

from s3_events_handler.adapters.rabbitmq.connection import (
    BrokerConnection,
    BrokerSettings,
    declare_topology,
    describe,
)
from s3_events_handler.adapters.rabbitmq.consumer import Consumer
from s3_events_handler.adapters.rabbitmq.transfer_requests import (
    AmqpTransferRequests,
    transfer_request_body,
)

__all__ = [
    "AmqpTransferRequests",
    "BrokerConnection",
    "BrokerSettings",
    "Consumer",
    "declare_topology",
    "describe",
    "transfer_request_body",
]

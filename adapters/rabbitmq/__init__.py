"""RabbitMQ: the broker connection, the transfer-request publisher, the consumer loop and the
settling of each message's outcome."""

from s3_events_handler.adapters.rabbitmq.connection import (
    BrokerCertificateError,
    BrokerSettings,
    cannot_reach,
    check_certificate,
    declare_topology,
)
from s3_events_handler.adapters.rabbitmq.consumer import Consumer
from s3_events_handler.adapters.rabbitmq.io_thread import BrokerConnection
from s3_events_handler.adapters.rabbitmq.settlement import Received, Settled, Settlement
from s3_events_handler.adapters.rabbitmq.transfer_requests import (
    AmqpTransferRequests,
    transfer_request_body,
)

__all__ = [
    "AmqpTransferRequests",
    "BrokerCertificateError",
    "BrokerConnection",
    "BrokerSettings",
    "Consumer",
    "Received",
    "Settled",
    "Settlement",
    "cannot_reach",
    "check_certificate",
    "declare_topology",
    "transfer_request_body",
]

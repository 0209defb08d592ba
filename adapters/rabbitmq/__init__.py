"""RabbitMQ: the broker connection, the transfer-request publisher, the consumer loop and the
settling of each message's outcome."""

# Only for entrypoints/cli.py, until its import names connection.py like everyone else's.
from s3_events_handler.adapters.rabbitmq.connection import (
    BrokerCertificateError as BrokerCertificateError,
)
from s3_events_handler.adapters.rabbitmq.connection import (
    check_certificate as check_certificate,
)

"""Reaching the broker: its settings, the topology, the one blocking connection (`connect`:
AMQPS with `tls`, its certificate checked, contract §4.5, §7) and what a command says without
one (`cannot_reach`). docs/architecture.md ("Ports and who implements them") says who uses what.
"""

from __future__ import annotations

import logging
import ssl
import struct
from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions

from s3_events_handler.adapters.tls import client_context, unverified, verification_failure
from s3_events_handler.application.reasons import reason_of
from s3_events_handler.application.retries import RetrySchedule

log = logging.getLogger(__name__)

PERSISTENT = 2
JSON = "application/json"

# A publish the broker refused (a queue that would not take it, or no queue of that name):
# a channel error to pika, but the channel lives on and the message is still ours.
REFUSED = (pika.exceptions.NackError, pika.exceptions.UnroutableError)
# Any other of these: the channel or the connection is gone.
_LOST = (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError, OSError)


@dataclass(frozen=True)
class BrokerSettings:
    """Where the broker is and what this service calls its queues (contract §4.5, §5); checked
    where it is read (`adapters/config.py`)."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    incoming_queue: str
    transfer_queue: str
    incoming_exchange: str = ""
    transfer_exchange: str = ""
    vhost: str = "/"
    prefetch: int = 1
    heartbeat: int = 60
    tls: bool = False
    ca_file: str = ""
    retries: RetrySchedule = field(default_factory=RetrySchedule)
    """Its delays are the retry queues declared."""
    blocked_connection_timeout: float = 300.0
    socket_timeout: float = 10.0
    connection_name: str = "s3-events-handler"

    def retry_queue(self, seconds: int) -> str:
        return f"{self.incoming_queue}.retry.{seconds}"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.incoming_queue}.dead-letter"

    @property
    def retry_queues(self) -> dict[int, str]:
        """Each retry queue, by the seconds a message waits in it."""
        return {seconds: self.retry_queue(seconds) for seconds in self.retries.delays}

    @property
    def own_queues(self) -> list[str]:
        """The queues no other service uses: none until the first `consume` declares them."""
        return [*self.retry_queues.values(), self.dead_letter_queue]

    @property
    def queues(self) -> list[str]:
        """Every queue the service uses, in the order `declare_topology` declares them."""
        return [self.incoming_queue, self.transfer_queue, *self.own_queues]

    @property
    def whereabouts(self) -> str:
        """The broker as every message about reaching it names it."""
        return f"the broker at {self.host}:{self.port} (vhost {self.vhost})"


def copy_properties(original: Any, user: str, **changes: Any) -> pika.BasicProperties:
    """A received message's properties, all of them, with `changes` applied, to publish it
    again as `user`.

    A `user_id` other than ours is dropped: the broker refuses a publish whose
    user_id is not the connection's user, and the message could never move on.
    """
    values = dict(vars(original))
    if values["user_id"] != user:
        values["user_id"] = None
    values.update(changes)
    return pika.BasicProperties(**values)


# What pika raises, before anything is sent, for properties it cannot encode (some it decodes,
# such as floats from other clients, it cannot encode again).
UNENCODABLE = (
    pika.exceptions.ProtocolSyntaxError,
    pika.exceptions.ShortStringTooLong,
    UnicodeEncodeError,
    struct.error,
)


# pika is untyped: to mypy its exceptions are Any.
class BrokerCertificateError(pika.exceptions.AMQPConnectionError):  # type: ignore[misc]
    """The broker's certificate cannot be verified: a setting to fix, not an outage to wait out."""

    def __init__(self, settings: BrokerSettings, failure: ssl.SSLCertVerificationError) -> None:
        subject = f"the broker at {settings.host}:{settings.port}"
        names = ("RABBIT_MQ_SSL", "RABBIT_MQ_CA_FILE")
        super().__init__(unverified(subject, names, settings.ca_file, failure))


def declare_topology(channel: Any, settings: BrokerSettings) -> None:
    """Declare exactly what contract §4.5 says: shared queues and exchanges as today's service does.

    A declaration that differs from what exists on the live broker fails with
    PRECONDITION_FAILED, so durability and arguments here are not a matter of taste.
    """
    _declare_queue_with_exchange(channel, settings.incoming_queue, settings.incoming_exchange)
    _declare_queue_with_exchange(channel, settings.transfer_queue, settings.transfer_exchange)
    for seconds, queue in settings.retry_queues.items():
        channel.queue_declare(
            queue=queue,
            durable=True,
            arguments={
                "x-message-ttl": seconds * 1000,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": settings.incoming_queue,
            },
        )
    channel.queue_declare(queue=settings.dead_letter_queue, durable=True)


def _declare_queue_with_exchange(channel: Any, queue: str, exchange: str) -> None:
    channel.queue_declare(queue=queue, durable=True)
    if exchange:
        channel.exchange_declare(
            exchange=exchange,
            exchange_type="direct",
            durable=False,
            auto_delete=False,
            internal=False,
        )
        channel.queue_bind(queue=queue, exchange=exchange, routing_key=queue)


def connect(settings: BrokerSettings) -> Any:
    """A blocking connection, nothing declared (commands must leave the broker as they found
    it); AMQPS with `tls`, where a certificate that fails raises `BrokerCertificateError`."""
    ssl_options = (
        pika.SSLOptions(client_context(settings.ca_file), server_hostname=settings.host)
        if settings.tls
        else None
    )
    parameters = pika.ConnectionParameters(
        host=settings.host,
        port=settings.port,
        virtual_host=settings.vhost,
        credentials=pika.PlainCredentials(settings.user, settings.password, erase_on_connect=True),
        heartbeat=settings.heartbeat,
        blocked_connection_timeout=settings.blocked_connection_timeout,
        socket_timeout=settings.socket_timeout,
        connection_attempts=1,
        client_properties={"connection_name": settings.connection_name},
        ssl_options=ssl_options,
    )
    try:
        return pika.BlockingConnection(parameters)
    except Exception as error:
        failure = verification_failure(error)
        if failure is not None:
            raise BrokerCertificateError(settings, failure) from error
        raise


def check_certificate(settings: BrokerSettings) -> None:
    """With `tls`, connect once before anything that retries forever (the consumer's loop)
    or would report an outage instead: a certificate never to be accepted raises
    `BrokerCertificateError` here. Anything else (refused, unreachable, a login refused) is
    left to whoever connects next."""
    if not settings.tls:
        return
    try:
        connect(settings).close()
    except BrokerCertificateError:
        raise
    except (pika.exceptions.AMQPError, OSError) as error:
        log.debug("no connection to the broker yet: %s", reason_of(error, [settings.password]))


def cannot_reach(settings: BrokerSettings, error: BaseException) -> str:
    """What a command says when `connect` failed: where the broker is and why, no password."""
    return f"cannot reach {settings.whereabouts}: {reason_of(error, [settings.password])}"


def connection_lost(error: BaseException) -> bool:
    """Whether `error` means the channel or the connection is gone: only a reconnect helps, and
    the broker redelivers what was not acked. A publish the broker refused is not that."""
    return isinstance(error, _LOST) and not isinstance(error, REFUSED)

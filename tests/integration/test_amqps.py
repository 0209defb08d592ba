"""The RabbitMQ adapter over AMQPS (RABBIT_MQ_SSL): real TLS on loopback.

The shared broker keeps its plain listener; the service's connections go through a
TLS-terminating proxy (tests/support/tls_proxy.py) with a certificate from a CA made
for the run, while the tests look at the queues over plain AMQP, straight at the broker.
"""

from __future__ import annotations

import dataclasses
import re
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pika.exceptions
import pytest

from s3_events_handler.adapters.rabbitmq.connection import (
    BrokerCertificateError,
    BrokerSettings,
    check_certificate,
)
from s3_events_handler.adapters.rabbitmq.consumer import Consumer
from s3_events_handler.adapters.rabbitmq.io_thread import BrokerConnection
from s3_events_handler.adapters.rabbitmq.transfer_requests import AmqpTransferRequests
from s3_events_handler.application.messages import Delivery, Done, Outcome
from s3_events_handler.domain.results import Sent
from tests.integration.test_rabbitmq import ARCHIVED
from tests.support import amqp
from tests.support.certificates import TlsFiles, make_tls_files
from tests.support.sidecars import golden_transfer_request
from tests.support.tls_proxy import TlsProxy

pytestmark = pytest.mark.broker


@pytest.fixture
def over_tls(settings: BrokerSettings, tls_proxy: TlsProxy, tls_files: TlsFiles) -> BrokerSettings:
    """`settings` (the queue names, straight at the broker), reached as the service would with
    RABBIT_MQ_SSL and RABBIT_MQ_CA_FILE."""
    return dataclasses.replace(
        settings, port=tls_proxy.port, tls=True, ca_file=str(tls_files.ca_file)
    )


@contextmanager
def consuming(
    connection: BrokerConnection, handler: Callable[[Delivery], Outcome]
) -> Iterator[tuple[Consumer, threading.Thread]]:
    """`Consumer.run()` in a thread of its own, as the service's main thread runs it;
    stopped, and waited for, on the way out."""
    consumer = Consumer(connection, connection.settings, handler, reconnect_delays=(0.2,))
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    try:
        yield consumer, thread
    finally:
        consumer.stop()
        thread.join(10)


def test_the_connection_declares_the_topology_over_amqps(
    over_tls: BrokerSettings, settings: BrokerSettings, tls_proxy: TlsProxy
) -> None:
    connection = BrokerConnection(over_tls)
    connection.open()
    try:
        assert connection.is_open
        assert tls_proxy.handshakes == 1
    finally:
        connection.close()

    for queue in amqp.all_queues(settings):
        assert amqp.message_count(settings.host, settings.port, queue) == 0  # it exists


def test_a_plain_client_cannot_use_the_tls_port(
    over_tls: BrokerSettings, tls_proxy: TlsProxy
) -> None:
    """So what succeeds above went over TLS: without RABBIT_MQ_SSL the same port fails."""
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        BrokerConnection(dataclasses.replace(over_tls, tls=False)).open()
    assert tls_proxy.handshakes == 0
    assert tls_proxy.refused == 1


def test_a_consumer_over_amqps_publishes_the_transfer_request_and_acks(
    over_tls: BrokerSettings, settings: BrokerSettings
) -> None:
    """The consumer, the worker thread's transfer request and the ack, all through TLS."""
    connection = BrokerConnection(over_tls)
    transfers = AmqpTransferRequests.for_settings(connection)

    def handler(delivery: Delivery) -> Outcome:
        request = golden_transfer_request()
        transfers.publish(request)
        return Done(
            Sent(
                key=request.source.key,
                cp_name="VRT",
                folder="TAPE-SHARE-EVENTS",
                sidecar_file="k98z0d4w1q.xml",
                pid="k98z0d4w1q",
            )
        )

    with consuming(connection, handler) as (consumer, _thread):
        started = amqp.wait_until(lambda: consumer.connects == 1, timeout=10)
        assert started, "the consumer did not start consuming over AMQPS"
        amqp.publish(settings.host, settings.port, settings.incoming_queue, b'{"Records": []}')
        assert amqp.wait_until(lambda: consumer.messages_handled == 1, timeout=10)

    [request] = amqp.wait_for_messages(settings.host, settings.port, settings.transfer_queue, 1)
    assert request.properties.message_id == "k98z0d4w1q"
    assert amqp.message_count(settings.host, settings.port, settings.incoming_queue) == 0


def test_a_broker_certificate_from_an_unknown_ca_is_named_with_the_settings(
    broker: tuple[str, int], settings: BrokerSettings, tls_files: TlsFiles, unknown_ca: TlsFiles
) -> None:
    with TlsProxy(unknown_ca.server_pem, broker) as stranger:
        trusting_ours = dataclasses.replace(
            settings, port=stranger.port, tls=True, ca_file=str(tls_files.ca_file)
        )
        with pytest.raises(BrokerCertificateError) as at_open:
            BrokerConnection(trusting_ours).open()
        with pytest.raises(BrokerCertificateError) as at_check:
            check_certificate(trusting_ours)

    for raised in (at_open, at_check):
        message = str(raised.value)
        assert "RABBIT_MQ_SSL=true" in message
        assert f"RABBIT_MQ_CA_FILE='{tls_files.ca_file}'" in message
        assert "certificate verify failed: unable to get local issuer certificate" in message
        assert len(message.splitlines()) == 1
    # The consumer's reconnect loop reads it as a connection failure, not a crash.
    assert isinstance(at_open.value, pika.exceptions.AMQPConnectionError)
    assert stranger.handshakes == 0


def test_the_system_ca_store_alone_does_not_trust_the_test_ca(over_tls: BrokerSettings) -> None:
    """Without RABBIT_MQ_CA_FILE the connections above fail: the CA file is what makes them work."""
    without = dataclasses.replace(over_tls, ca_file="")
    with pytest.raises(BrokerCertificateError, match="no RABBIT_MQ_CA_FILE, the system's CA"):
        check_certificate(without)


def test_a_certificate_for_another_host_name_is_refused(
    broker: tuple[str, int], settings: BrokerSettings, tmp_path: Path
) -> None:
    elsewhere = make_tls_files(tmp_path / "tls", names=("rabbitmq.example.org",))
    with TlsProxy(elsewhere.server_pem, broker) as stranger:
        by_ip = dataclasses.replace(
            settings, port=stranger.port, tls=True, ca_file=str(elsewhere.ca_file)
        )
        with pytest.raises(BrokerCertificateError, match=re.escape("not valid for '127.0.0.1'")):
            BrokerConnection(by_ip).open()


def test_checking_the_certificate_leaves_an_unreachable_broker_to_the_reconnect_loop(
    over_tls: BrokerSettings,
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    check_certificate(dataclasses.replace(over_tls, port=closed_port))


def test_the_consumer_waits_for_a_tls_broker_that_is_down_and_consumes_once_it_is_back(
    over_tls: BrokerSettings, settings: BrokerSettings, tls_proxy: TlsProxy
) -> None:
    """A refused connection is an outage, as without TLS: reconnect, never give up."""
    tls_proxy.stop()
    with consuming(BrokerConnection(over_tls), lambda delivery: Done(ARCHIVED)) as (
        consumer,
        thread,
    ):
        assert not amqp.wait_until(lambda: consumer.connects > 0, timeout=1)
        assert thread.is_alive()

        tls_proxy.start()  # the same port
        started = amqp.wait_until(lambda: consumer.connects == 1, timeout=10)
        assert started, "the consumer did not reconnect over AMQPS"
        amqp.publish(settings.host, settings.port, settings.incoming_queue, b"{}")
        assert amqp.wait_until(lambda: consumer.messages_handled == 1, timeout=10)

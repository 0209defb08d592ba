"""The RabbitMQ adapter against the real broker: topology, outcomes, transfer requests, failures."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

from s3_events_handler.adapters.logs import fields_of
from s3_events_handler.adapters.rabbitmq.connection import BrokerSettings
from s3_events_handler.adapters.rabbitmq.consumer import Consumer
from s3_events_handler.adapters.rabbitmq.io_thread import BrokerConnection
from s3_events_handler.adapters.rabbitmq.transfer_requests import (
    AmqpTransferRequests,
    transfer_request_body,
)
from s3_events_handler.application.messages import (
    DeadLetter,
    Delivery,
    Done,
    EventFacts,
    Outcome,
    Retry,
    Split,
)
from s3_events_handler.application.telemetry import EventOutcome
from s3_events_handler.domain.errors import ServiceUnavailable, System
from s3_events_handler.domain.results import AlreadyArchived
from tests.support import amqp
from tests.support.sidecars import golden_transfer_request
from tests.unit.recording_telemetry import RecordingTelemetry

pytestmark = pytest.mark.broker

Handler = Callable[[Delivery], Outcome]
# What a handler did matters not to the consumer: any `Done` is acked alike.
ARCHIVED = AlreadyArchived(key="clip.mxf")


@pytest.fixture
def rabbitmqctl(broker: tuple[str, int]) -> None:
    """The broker's admin tool, to inspect the topology and to close connections broker-side."""
    if shutil.which("rabbitmqctl") is None:
        reason = "rabbitmqctl is not installed next to the broker"
        if os.environ.get("REQUIRE_BROKER") == "1":
            pytest.fail(f"{reason} (REQUIRE_BROKER=1)")
        pytest.skip(reason)


class RunningConsumer:
    """A Consumer running `run()` in a thread, as the service's main thread would."""

    def __init__(
        self,
        settings: BrokerSettings,
        handler: Handler,
        grace: float | None,
        **options: Any,
    ) -> None:
        """`options`: the Consumer's (concurrency, ordering_key, telemetry)."""
        self.connection = BrokerConnection(settings)
        self.consumer = Consumer(
            self.connection, settings, handler, reconnect_delays=(0.2,), **options
        )
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(grace,), daemon=True)

    def _run(self, grace: float | None) -> None:
        try:
            self.consumer.run(grace_seconds=grace)
        except BaseException as error:  # surfaced by the test, not lost in the thread
            self.error = error

    def start(self) -> RunningConsumer:
        self.thread.start()
        consuming = amqp.wait_until(lambda: self.consumer.connects == 1, timeout=10)
        assert consuming, "the consumer did not start consuming"
        return self

    def stop(self, timeout: float = 10.0) -> float:
        """Stop and wait for `run()` to return; the seconds that took."""
        started = time.monotonic()
        self.consumer.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "run() did not return after stop()"
        assert self.error is None, f"run() raised {self.error!r}"
        return time.monotonic() - started


@pytest.fixture
def start_consumer() -> Iterator[Callable[..., RunningConsumer]]:
    started: list[RunningConsumer] = []

    def start(
        settings: BrokerSettings, handler: Handler, *, grace: float | None = None, **options: Any
    ) -> RunningConsumer:
        running = RunningConsumer(settings, handler, grace, **options).start()
        started.append(running)
        return running

    yield start
    for running in started:
        running.consumer.stop()
        running.thread.join(10)


def publish(
    settings: BrokerSettings, body: bytes, *, exchange: str = "", properties: Any = None
) -> None:
    """Publish `body` for the incoming queue (straight to it, unless through `exchange`)."""
    amqp.publish(
        settings.host,
        settings.port,
        settings.incoming_queue,
        body,
        exchange=exchange,
        properties=properties,
    )


def incoming_left(settings: BrokerSettings) -> int:
    """Ready messages still in the incoming queue."""
    return amqp.message_count(settings.host, settings.port, settings.incoming_queue)


def wait_for(
    settings: BrokerSettings, queue: str, count: int, *, timeout: float = 5.0
) -> list[amqp.Message]:
    """Take messages from `queue` until `count` came or `timeout` passed; what came."""
    return amqp.wait_for_messages(settings.host, settings.port, queue, count, timeout=timeout)


def incoming_properties(**overrides: Any) -> Any:
    values: dict[str, Any] = {
        "content_type": "application/json",
        "delivery_mode": 2,
        "correlation_id": "corr-original",
        "message_id": "msg-original",
        "headers": {"x-origin": "gateway", "x-number": 7},
        "app_id": "s3-gateway",
        "type": "s3-event",
        "timestamp": 1_700_000_000,
    }
    values.update(overrides)
    return pika.BasicProperties(**values)


def _rows_named(rows: list[dict[str, Any]], names: set[str]) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in rows if row["name"] in names}


# --- topology ------------------------------------------------------------------------------


@pytest.mark.usefixtures("rabbitmqctl")
def test_topology_is_declared_as_the_spec_says(settings: BrokerSettings) -> None:
    connection = BrokerConnection(settings)
    connection.open()
    assert connection.is_open
    connection.close()
    connection.close()  # idempotent
    assert not connection.is_open

    queues = _rows_named(
        amqp.rabbitmqctl_json("list_queues", "name", "durable", "auto_delete", "arguments"),
        set(amqp.all_queues(settings)),
    )
    assert set(queues) == set(amqp.all_queues(settings))
    assert all(row["durable"] and not row["auto_delete"] for row in queues.values())
    for plain in (settings.incoming_queue, settings.transfer_queue, settings.dead_letter_queue):
        assert queues[plain]["arguments"] == []
    for seconds in settings.retries.delays:
        arguments = {
            name: value for name, _, value in queues[settings.retry_queue(seconds)]["arguments"]
        }
        assert arguments == {
            "x-message-ttl": seconds * 1000,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": settings.incoming_queue,
        }

    exchanges = _rows_named(
        amqp.rabbitmqctl_json(
            "list_exchanges", "name", "type", "durable", "auto_delete", "internal", "arguments"
        ),
        {settings.incoming_exchange, settings.transfer_exchange},
    )
    for row in exchanges.values():
        assert (row["type"], row["durable"], row["auto_delete"], row["internal"]) == (
            "direct",
            False,
            False,
            False,
        )
        assert row["arguments"] == []
    assert len(exchanges) == 2

    bindings = {
        (row["source_name"], row["destination_name"], row["routing_key"])
        for row in amqp.rabbitmqctl_json(
            "list_bindings", "source_name", "destination_name", "routing_key"
        )
        if row["source_name"] in (settings.incoming_exchange, settings.transfer_exchange)
    }
    assert bindings == {
        (settings.incoming_exchange, settings.incoming_queue, settings.incoming_queue),
        (settings.transfer_exchange, settings.transfer_queue, settings.transfer_queue),
    }


def test_starts_against_a_broker_declared_like_todays_service(settings: BrokerSettings) -> None:
    amqp.pre_declare_like_todays_service(settings)
    connection = BrokerConnection(settings)
    connection.open()
    connection.open()  # a reconnect redeclares everything
    assert connection.is_open
    connection.close()


def test_a_declaration_unlike_the_live_one_fails(broker: tuple[str, int]) -> None:
    """The control for the test above: the broker does refuse a differing redeclaration."""
    host, port = broker
    prefix = amqp.unique_prefix("rmq-differs")
    settings = amqp.settings_for(host, port, prefix, incoming_exchange=f"{prefix}.s3-events")
    try:
        with amqp.channel(host, port) as ch:
            ch.exchange_declare(
                exchange=settings.incoming_exchange, exchange_type="direct", durable=True
            )
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as raised:
            BrokerConnection(settings).open()
        assert raised.value.reply_code == 406  # PRECONDITION_FAILED
    finally:
        amqp.delete_topology(settings)


@pytest.mark.usefixtures("rabbitmqctl")
def test_consuming_without_an_incoming_exchange_binds_nothing(settings: BrokerSettings) -> None:
    plain = dataclasses.replace(settings, incoming_exchange="", transfer_exchange="")
    connection = BrokerConnection(plain)
    connection.open()
    connection.close()
    bound = [
        row
        for row in amqp.rabbitmqctl_json("list_bindings", "source_name", "destination_name")
        if row["destination_name"] in amqp.all_queues(plain) and row["source_name"] != ""
    ]
    assert bound == []


# --- outcomes ------------------------------------------------------------------------------


def test_done_acks_the_message(
    settings: BrokerSettings, start_consumer: Callable[..., RunningConsumer]
) -> None:
    seen: list[Delivery] = []

    def handler(delivery: Delivery) -> Outcome:
        seen.append(delivery)
        return Done(ARCHIVED, correlation_id=delivery.correlation_id)

    running = start_consumer(settings, handler)
    publish(settings, b'{"Records": []}', properties=incoming_properties())
    assert amqp.wait_until(lambda: running.consumer.messages_handled == 1)
    running.stop()

    assert seen == [
        Delivery(body=b'{"Records": []}', correlation_id="corr-original", attempt=1, pid=None)
    ]
    # Closing the connection would have put an unacked message back.
    assert incoming_left(settings) == 0


def test_telemetry_hears_of_the_connection_each_settled_event_and_the_loop(
    settings: BrokerSettings, start_consumer: Callable[..., RunningConsumer]
) -> None:
    telemetry = RecordingTelemetry()
    facts = EventFacts("removed", "bucket", "clip.mxf", None, "search", 2)

    def handler(delivery: Delivery) -> Outcome:
        return Retry("MediaHaven answered 503", 1, 3, "corr-retry", facts)

    running = start_consumer(settings, handler, telemetry=telemetry)
    publish(settings, b"{}")
    assert amqp.wait_until(lambda: running.consumer.messages_handled == 1)
    running.stop()

    assert telemetry.without_ticks() == [
        "connected",
        "event_finished",
        "stopping",
        "disconnected",
    ]
    assert "loop_tick" in telemetry.calls
    [report] = telemetry.reports
    assert (report.outcome, report.facts, report.correlation_id) == (
        EventOutcome.RETRIED,
        facts,
        "corr-retry",
    )
    assert report.reason == "MediaHaven answered 503"
    assert 0 < report.seconds < 5


def test_a_message_without_headers_reaches_the_handler_with_empty_headers(
    settings: BrokerSettings, start_consumer: Callable[..., RunningConsumer]
) -> None:
    seen: list[Delivery] = []

    def handler(delivery: Delivery) -> Outcome:
        seen.append(delivery)
        return Done(ARCHIVED)

    running = start_consumer(settings, handler)
    publish(settings, b"{}", exchange=settings.incoming_exchange)
    assert amqp.wait_until(lambda: running.consumer.messages_handled == 1)
    assert seen == [Delivery(body=b"{}", correlation_id=None, attempt=1, pid=None)]


def test_split_republishes_each_record_with_the_original_properties(
    settings: BrokerSettings, start_consumer: Callable[..., RunningConsumer]
) -> None:
    original = b'{"Records": [1, 2]}'
    parts = (b'{"Records": [1]}', b'{"Records": [2]}')
    part_in_hand = threading.Event()
    release = threading.Event()

    def handler(delivery: Delivery) -> Outcome:
        if delivery.body == original:
            return Split(bodies=parts)
        part_in_hand.set()
        release.wait(timeout=10)  # hold the first part unacked; stopping leaves it in the queue
        return Done(ARCHIVED)

    running = start_consumer(settings, handler, grace=0.2)
    publish(settings, original, properties=incoming_properties())
    assert part_in_hand.wait(timeout=5)
    running.stop()
    release.set()

    messages = wait_for(settings, settings.incoming_queue, 2)
    assert sorted(message.body for message in messages) == list(parts)  # the original was acked
    expected = incoming_properties()
    for message in messages:
        for name in (
            "content_type",
            "delivery_mode",
            "correlation_id",
            "message_id",
            "headers",
            "app_id",
            "type",
            "timestamp",
        ):
            assert getattr(message.properties, name) == getattr(expected, name), name
    assert running.consumer.messages_handled == 1


def test_retry_waits_in_its_level_queue_then_comes_back(
    settings: BrokerSettings, start_consumer: Callable[..., RunningConsumer]
) -> None:
    seen: list[tuple[Delivery, float]] = []

    def handler(delivery: Delivery) -> Outcome:
        seen.append((delivery, time.monotonic()))
        attempt = delivery.attempt
        return Retry(
            reason="MediaHaven answered 503",
            delay_seconds=1 if attempt == 1 else 20,  # 20 is no level: it waits on the 30 s one
            next_attempt=attempt + 1,
            correlation_id=f"corr-{attempt}",
        )

    running = start_consumer(settings, handler)
    publish(settings, b"event", properties=incoming_properties())

    waiting = wait_for(settings, settings.retry_queue(30), 1, timeout=10)
    assert len(waiting) == 1
    assert [delivery.attempt for delivery, _ in seen] == [1, 2]
    assert seen[1][0].correlation_id == "corr-1"
    assert seen[1][1] - seen[0][1] >= 0.9  # it waited the level's TTL before coming back
    message = waiting[0]
    assert message.body == b"event"
    headers = message.headers
    assert {name: headers.get(name) for name in ("x-origin", "x-number", "x-attempt")} == {
        "x-origin": "gateway",
        "x-number": 7,
        "x-attempt": 3,
    }
    # The broker's own record that the message expired out of the 1 s level queue.
    [death] = headers["x-death"]
    assert (death["queue"], death["reason"]) == (settings.retry_queue(1), "expired")
    assert message.properties.correlation_id == "corr-2"
    assert message.properties.message_id == "msg-original"
    assert message.properties.delivery_mode == 2
    running.stop()
    assert incoming_left(settings) == 0
    assert running.consumer.messages_handled == 2


def test_dead_letter_keeps_the_body_and_adds_the_reason(
    settings: BrokerSettings, start_consumer: Callable[..., RunningConsumer]
) -> None:
    def handler(delivery: Delivery) -> Outcome:
        return DeadLetter(reason="not JSON", stage="parse")

    running = start_consumer(settings, handler)
    body = b"\x00 not json \xff"
    publish(settings, body, properties=incoming_properties(delivery_mode=1))
    [message] = wait_for(settings, settings.dead_letter_queue, 1)
    assert message.body == body
    assert message.headers == {
        "x-origin": "gateway",
        "x-number": 7,
        "x-error": "not JSON",
        "x-error-stage": "parse",
    }
    assert message.properties.correlation_id == "corr-original"
    assert message.properties.message_id == "msg-original"
    assert message.properties.delivery_mode == 2
    running.stop()
    assert incoming_left(settings) == 0


def test_a_retry_amqp_cannot_encode_is_dead_lettered_instead_of_looping(
    settings: BrokerSettings,
    start_consumer: Callable[..., RunningConsumer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[bytes] = []
    telemetry = RecordingTelemetry()

    def handler(delivery: Delivery) -> Outcome:
        calls.append(delivery.body)
        # An attempt count no AMQP field can hold, as a header from elsewhere might decode to.
        return Retry(reason="down", delay_seconds=1, next_attempt=2**70, correlation_id="c")

    with caplog.at_level(logging.INFO, logger="s3_events_handler.adapters.rabbitmq.consumer"):
        running = start_consumer(settings, handler, telemetry=telemetry)
        publish(settings, b"event")
        [message] = wait_for(settings, settings.dead_letter_queue, 1)
        running.stop()
    assert message.body == b"event"
    assert message.headers["x-error-stage"] == "republish"
    assert "cannot encode" in message.headers["x-error"]
    assert calls == [b"event"]
    assert incoming_left(settings) == 0
    # Counted and logged as what was done: a dead letter, with the dead letter's reason.
    [report] = telemetry.reports
    assert report.outcome is EventOutcome.DEAD_LETTERED
    assert (report.reason, report.facts.stage) == (message.headers["x-error"], "republish")
    [line] = [record for record in caplog.records if "outcome" in fields_of(record)]
    assert fields_of(line)["outcome"] == "dead_lettered"
    assert line.getMessage().startswith("dead-letter: message ")


def test_a_dead_letter_queue_deleted_under_the_consumer_costs_no_reconnect(
    settings: BrokerSettings, start_consumer: Callable[..., RunningConsumer]
) -> None:
    """The republish comes back unroutable (mandatory): the consumer declares its queues
    again, as a reconnect would, and sends the message round the retry queue meanwhile."""
    calls: list[Delivery] = []

    def handler(delivery: Delivery) -> Outcome:
        calls.append(delivery)
        return DeadLetter(reason="bad", stage="parse")

    running = start_consumer(settings, handler)
    host, port, dead_letters = settings.host, settings.port, settings.dead_letter_queue
    amqp.delete_queues(host, port, dead_letters)
    publish(settings, b"event")

    assert amqp.wait_until(lambda: amqp.queue_exists(host, port, dead_letters), timeout=10)
    [message] = wait_for(settings, dead_letters, 1, timeout=10)
    assert message.body == b"event"
    assert len(calls) == 2  # back from the retry queue of its first attempt
    assert calls[1].attempt == 2
    assert running.consumer.connects == 1
    assert running.consumer.messages_handled == 2
    assert incoming_left(settings) == 0


# --- transfer requests ---------------------------------------------------------------------


@contextlib.contextmanager
def opened(settings: BrokerSettings) -> Iterator[BrokerConnection]:
    """A connection opened (the topology declared) for the block, closed after it."""
    connection = BrokerConnection(settings)
    connection.open()
    try:
        yield connection
    finally:
        connection.close()


def test_transfer_request_is_published_as_the_spec_says(
    settings: BrokerSettings, examples: Path
) -> None:
    with opened(settings) as connection:
        AmqpTransferRequests.for_settings(connection).publish(golden_transfer_request())

    [message] = wait_for(settings, settings.transfer_queue, 1)
    assert message.exchange == settings.transfer_exchange
    assert message.routing_key == settings.transfer_queue
    golden = json.loads((examples / "transfer-request-essence.json").read_text())
    assert message.json() == golden
    assert message.body == transfer_request_body(golden_transfer_request())
    properties = message.properties
    assert properties.delivery_mode == 2
    assert properties.content_type == "application/json"
    assert properties.correlation_id == "7c1f0a9e2b3d4c5e6f708192a3b4c5d6"
    assert properties.message_id == "k98z0d4w1q"


def test_an_empty_transfer_exchange_publishes_via_the_default_exchange(
    settings: BrokerSettings,
) -> None:
    default = dataclasses.replace(settings, transfer_exchange="")
    with opened(default) as connection:
        AmqpTransferRequests.for_settings(connection).publish(golden_transfer_request())

    [message] = wait_for(settings, settings.transfer_queue, 1)
    assert message.exchange == ""
    assert message.routing_key == settings.transfer_queue


def test_an_unroutable_transfer_request_is_a_transient_failure(settings: BrokerSettings) -> None:
    unbound = f"{settings.incoming_queue}.unbound"
    with amqp.channel(settings.host, settings.port) as ch:
        ch.exchange_declare(exchange=unbound, exchange_type="direct")
    try:
        with opened(settings) as connection:
            nowhere = AmqpTransferRequests(
                connection, exchange=unbound, routing_key="nobody-listens"
            )
            with pytest.raises(ServiceUnavailable, match="reached no queue") as raised:
                nowhere.publish(golden_transfer_request())
            assert raised.value.system is System.BROKER
            # The connection survives: the next request goes through.
            AmqpTransferRequests.for_settings(connection).publish(golden_transfer_request())
    finally:
        amqp.delete_exchanges(settings.host, settings.port, unbound)
    assert len(wait_for(settings, settings.transfer_queue, 1)) == 1


def test_the_handler_publishes_transfer_requests_from_its_worker_thread(
    settings: BrokerSettings, start_consumer: Callable[..., RunningConsumer]
) -> None:
    unbound = f"{settings.incoming_queue}.unbound"
    with amqp.channel(settings.host, settings.port) as ch:
        ch.exchange_declare(exchange=unbound, exchange_type="direct")
    failures: list[BaseException] = []
    requests: list[AmqpTransferRequests] = []

    def handler(delivery: Delivery) -> Outcome:
        assert threading.current_thread() is not running.thread
        requests[0].publish(golden_transfer_request())
        try:
            requests[1].publish(golden_transfer_request())
        except ServiceUnavailable as error:
            failures.append(error)
        return Done(ARCHIVED)

    try:
        running = start_consumer(settings, handler)
        requests.append(AmqpTransferRequests.for_settings(running.connection))
        requests.append(AmqpTransferRequests(running.connection, exchange=unbound, routing_key="x"))
        publish(settings, b"event")
        assert amqp.wait_until(lambda: running.consumer.messages_handled == 1)
        assert len(wait_for(settings, settings.transfer_queue, 1)) == 1
        assert [type(error) for error in failures] == [ServiceUnavailable]
        assert running.consumer.connects == 1
    finally:
        amqp.delete_exchanges(settings.host, settings.port, unbound)


# --- resilience ----------------------------------------------------------------------------


@pytest.mark.usefixtures("rabbitmqctl")
def test_the_consumer_reconnects_when_the_broker_closes_its_connection(
    settings: BrokerSettings, start_consumer: Callable[..., RunningConsumer]
) -> None:
    bodies: list[bytes] = []

    def handler(delivery: Delivery) -> Outcome:
        bodies.append(delivery.body)
        return Done(ARCHIVED)

    running = start_consumer(settings, handler)
    publish(settings, b"first")
    assert amqp.wait_until(lambda: running.consumer.messages_handled == 1)

    assert amqp.close_connections(settings.connection_name) == 1
    consumer = running.consumer
    assert amqp.wait_until(lambda: consumer.connects == 2, timeout=10)

    publish(settings, b"second")
    assert amqp.wait_until(lambda: consumer.messages_handled == 2)
    assert bodies == [b"first", b"second"]
    assert running.thread.is_alive()
    running.stop()


@pytest.mark.usefixtures("rabbitmqctl")
def test_a_lost_channels_outcome_is_dropped_and_its_redelivered_copy_waits_for_it(
    settings: BrokerSettings, start_consumer: Callable[..., RunningConsumer]
) -> None:
    """A delivery tag names a message on its own channel only: the outcome of a message in
    hand when the connection went is never acked on the next channel, where the same tag
    names its redelivered copy (or another message)."""
    release = threading.Event()
    spans: list[tuple[float, float]] = []

    def handler(delivery: Delivery) -> Outcome:
        began = time.monotonic()
        release.wait(timeout=10)
        spans.append((began, time.monotonic()))
        return Done(ARCHIVED)

    running = start_consumer(settings, handler, concurrency=4, ordering_key=lambda body: body)
    publish(settings, b"in hand")
    assert amqp.wait_until(lambda: running.consumer.in_hand == 1)

    assert amqp.close_connections(settings.connection_name) == 1
    consumer = running.consumer
    assert amqp.wait_until(lambda: consumer.connects == 2, timeout=10)
    release.set()  # the stale handler finishes now, on the new channel's watch

    assert amqp.wait_until(lambda: consumer.messages_handled == 1, timeout=10)
    time.sleep(0.5)  # an ack of the stale tag would close this channel about now
    assert len(spans) == 2, "the redelivered copy was not handled"
    (_, stale_ended), (copy_began, _) = spans
    assert copy_began >= stale_ended  # the copy waited for the stale one: one object at a time
    assert consumer.connects == 2 and consumer.messages_handled == 1
    running.stop()
    assert incoming_left(settings) == 0


def test_stop_finishes_every_message_in_hand_and_returns_those_waiting_at_once(
    settings: BrokerSettings, start_consumer: Callable[..., RunningConsumer]
) -> None:
    release = threading.Event()
    handled: list[bytes] = []

    def handler(delivery: Delivery) -> Outcome:
        release.wait(timeout=10)
        handled.append(delivery.body)
        return Done(ARCHIVED)

    three = dataclasses.replace(settings, prefetch=3)
    running = start_consumer(three, handler, concurrency=3, ordering_key=lambda body: body[:1])
    for body in (b"a1", b"b1", b"a2", b"a3"):  # a2 waits behind a1; a3 is not delivered yet
        publish(settings, body)
    assert amqp.wait_until(lambda: running.consumer.in_hand == 2)

    stopping = threading.Thread(target=running.stop)
    stopping.start()
    # Taken back before the ones in hand are done: another consumer may take them meanwhile.
    assert amqp.wait_until(lambda: incoming_left(settings) == 2, timeout=5)
    release.set()
    stopping.join(10)

    assert sorted(handled) == [b"a1", b"b1"]
    assert running.consumer.messages_handled == 2
    assert [message.body for message in wait_for(settings, settings.incoming_queue, 2)] == [
        b"a2",
        b"a3",
    ]


def test_stop_finishes_the_message_in_hand(
    settings: BrokerSettings, start_consumer: Callable[..., RunningConsumer]
) -> None:
    started = threading.Event()

    def handler(delivery: Delivery) -> Outcome:
        started.set()
        time.sleep(1)
        return Done(ARCHIVED)

    running = start_consumer(settings, handler)
    publish(settings, b"slow")
    assert started.wait(timeout=5)
    running.stop()

    assert running.consumer.messages_handled == 1
    assert incoming_left(settings) == 0
    assert amqp.consumer_count(settings.host, settings.port, settings.incoming_queue) == 0


def test_stop_past_the_grace_leaves_the_message_for_redelivery(
    settings: BrokerSettings, start_consumer: Callable[..., RunningConsumer]
) -> None:
    started = threading.Event()
    release = threading.Event()

    def handler(delivery: Delivery) -> Outcome:
        started.set()
        release.wait(timeout=10)
        return Done(ARCHIVED)

    running = start_consumer(settings, handler, grace=0.5)
    publish(settings, b"slow")
    assert started.wait(timeout=5)
    took = running.stop()
    release.set()

    assert took < 0.5 + 1
    assert running.consumer.messages_handled == 0
    [message] = wait_for(settings, settings.incoming_queue, 1)
    assert message.body == b"slow"
    assert message.redelivered


def test_a_handler_slower_than_two_heartbeats_keeps_the_connection(
    settings: BrokerSettings, start_consumer: Callable[..., RunningConsumer]
) -> None:
    def handler(delivery: Delivery) -> Outcome:
        time.sleep(5)
        return Done(ARCHIVED)

    running = start_consumer(dataclasses.replace(settings, heartbeat=1), handler)
    publish(settings, b"slow")
    assert amqp.wait_until(lambda: running.consumer.messages_handled == 1, timeout=10)
    assert running.consumer.connects == 1
    running.stop()
    assert incoming_left(settings) == 0


def test_a_command_without_a_consumer_opens_its_connection_when_it_publishes(
    settings: BrokerSettings,
) -> None:
    connection = BrokerConnection(settings)
    transfers = AmqpTransferRequests.for_settings(connection)
    try:
        transfers.publish(golden_transfer_request())  # opens (and declares) on first use
        connection.close()
        transfers.publish(golden_transfer_request())  # reopens a connection that is gone
    finally:
        connection.close()
    messages = wait_for(settings, settings.transfer_queue, 2)
    assert len(messages) == 2


@pytest.fixture
def nowhere(broker: tuple[str, int]) -> BrokerSettings:
    """Settings of a broker that is not there: a port nothing listens on."""
    host, _ = broker
    with socket.socket() as probe:
        probe.bind((host, 0))
        closed_port = probe.getsockname()[1]
    return amqp.settings_for(host, closed_port, amqp.unique_prefix("rmq-down"))


def test_broker_trouble_never_ends_run_and_backs_off(nowhere: BrokerSettings) -> None:
    """Each failed connection is a broker error to telemetry; the backoff keeps the loop alive."""
    settings = nowhere
    telemetry = RecordingTelemetry()
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 4:
            consumer.stop()

    consumer = Consumer(
        BrokerConnection(settings),
        settings,
        lambda delivery: Done(ARCHIVED),
        reconnect_delays=(0.1, 0.2),
        sleep=sleep,
        telemetry=telemetry,
    )
    consumer.run()  # returns only because of stop()
    assert slept == [0.1, 0.2, 0.2, 0.2]
    assert consumer.connects == 0
    failed = ["disconnected", "downstream_error:broker"]
    assert telemetry.without_ticks() == [*failed * 4, "stopping", "disconnected"]
    assert telemetry.calls.count("loop_tick") == len(slept)


def test_the_password_shows_nowhere(
    settings: BrokerSettings, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "wr0ng-Pa55word-for-the-test"
    wrong = dataclasses.replace(settings, password=secret)
    assert secret not in repr(wrong)

    with pytest.raises(pika.exceptions.AMQPConnectionError) as raised:
        BrokerConnection(wrong).open()
    assert secret not in f"{raised.value!r} {raised.value}"

    attempts: list[float] = []

    def sleep(seconds: float) -> None:
        attempts.append(seconds)
        consumer.stop()

    consumer = Consumer(
        BrokerConnection(wrong), wrong, lambda delivery: Done(ARCHIVED), sleep=sleep
    )
    with caplog.at_level(logging.DEBUG):
        consumer.run()
        with pytest.raises(ServiceUnavailable) as unavailable:
            AmqpTransferRequests.for_settings(BrokerConnection(wrong)).publish(
                golden_transfer_request()
            )
    assert attempts == [0.25]  # the first 1 s delay, slept in slices that watch for stop()
    assert secret not in str(unavailable.value)
    assert "broker connection lost" in caplog.text
    assert secret not in caplog.text

"""Settling outcomes on a recording channel: what is published, and that the ack comes last.

The broker's side of the same (retry TTLs, redelivery after a refused publish)
is in tests/integration/test_rabbitmq.py.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pika
import pika.exceptions
import pytest

from s3_events_handler.adapters.rabbitmq.settlement import Received, Settled, Settlement
from s3_events_handler.application.messages import (
    DeadLetter,
    Done,
    EventFacts,
    Outcome,
    Retry,
    Split,
)
from s3_events_handler.application.telemetry import EventOutcome, EventReport
from s3_events_handler.domain.results import AlreadyArchived
from tests.unit.recording_channel import SETTINGS, Acked, Published, RecordingChannel

TAG = 7
BODY = b'{"Records": [{"eventName": "ObjectCreated:Put"}]}'
HEADERS = {"x-origin": "gateway", "x-number": 7}
ACK = Acked(TAG, multiple=False)


def incoming(**overrides: Any) -> Received:
    """A delivery that sets every property, so a copy that loses one shows."""
    values: dict[str, Any] = {
        "content_type": "application/json",
        "content_encoding": "utf-8",
        "headers": HEADERS,
        "delivery_mode": 1,
        "priority": 3,
        "correlation_id": "corr-incoming",
        "reply_to": "nobody",
        "expiration": "60000",
        "message_id": "msg-incoming",
        "timestamp": 1_700_000_000,
        "type": "s3-event",
        "user_id": SETTINGS.user,
        "app_id": "s3-gateway",
        "cluster_id": "cluster-a",
    }
    values.update(overrides)
    return Received(TAG, pika.BasicProperties(**values), BODY)


def parked(received: Received, headers: dict[str, Any], correlation_id: str) -> Any:
    """The properties of a copy in a retry or dead-letter queue: persistent, never expiring."""
    return pika.BasicProperties(
        **{
            **vars(received.properties),
            "headers": headers,
            "correlation_id": correlation_id,
            "delivery_mode": 2,
            "expiration": None,
        }
    )


def settled_on(channel: RecordingChannel, outcome: Outcome, received: Received) -> Settled:
    return Settlement(channel, SETTINGS).settle(received, outcome)


def retry(delay_seconds: int = 10) -> Retry:
    """Of a delivery with `HEADERS`: the copy carries them and `x-attempt` 3."""
    return Retry(
        reason="MediaHaven answered 503",
        delay_seconds=delay_seconds,
        next_attempt=3,
        correlation_id="corr-retry",
    )


def dead_letter() -> DeadLetter:
    return DeadLetter(reason="not JSON", stage="parse")


def with_headers(**extra: Any) -> Received:
    """`incoming()` with headers besides `HEADERS`."""
    return incoming(headers={**HEADERS, **extra})


def split() -> Split:
    return Split(bodies=(b'{"Records": [1]}', b'{"Records": [2]}'))


# --- what each outcome publishes -------------------------------------------------------------


@pytest.mark.parametrize(
    ("correlation_id", "reported"),
    [("corr-done", "corr-done"), (None, "corr-incoming")],
)
def test_done_acks_and_publishes_nothing(correlation_id: str | None, reported: str) -> None:
    channel = RecordingChannel()
    done = Done(result=AlreadyArchived(key="clip.MXF"), correlation_id=correlation_id)
    settled = settled_on(channel, done, incoming())
    assert channel.calls == [ACK]
    assert settled == Settled(done, "-", reported)
    assert settled.kind == "done"


def test_a_retry_goes_to_its_levels_queue_with_the_next_attempt_then_is_acked() -> None:
    channel = RecordingChannel()
    received = incoming()
    outcome = retry(delay_seconds=30)

    settled = settled_on(channel, outcome, received)

    properties = parked(received, {**HEADERS, "x-attempt": 3}, "corr-retry")
    assert channel.calls == [
        Published("", "s3-events.retry.30", BODY, properties, mandatory=True, confirmed=True),
        ACK,
    ]
    assert settled == Settled(outcome, "s3-events.retry.30", "corr-retry")
    assert settled.kind == "retry"


@pytest.mark.parametrize(
    ("delay_seconds", "queue"),
    [(1, "s3-events.retry.10"), (11, "s3-events.retry.30"), (5_000, "s3-events.retry.90")],
    ids=["below the first level", "between levels", "past the last level"],
)
def test_a_retry_waits_on_the_nearest_level_not_shorter_than_asked(
    delay_seconds: int, queue: str
) -> None:
    channel = RecordingChannel()
    settled_on(channel, retry(delay_seconds), incoming())
    assert [call.routing_key for call in channel.published] == [queue]
    assert channel.acked == [TAG]


@pytest.mark.parametrize("pid", [None, "k98z0d4w1q"], ids=["before a PID", "after the PID"])
def test_a_dead_letter_carries_its_reason_and_stage_then_is_acked(pid: str | None) -> None:
    channel = RecordingChannel()
    received = incoming()
    headers = {**HEADERS, "x-error": "FTP folder missing", "x-error-stage": "sidecar-upload"}
    if pid is not None:
        headers["x-pid"] = pid
    facts = EventFacts(stage="sidecar-upload", pid=pid)
    outcome = DeadLetter(reason="FTP folder missing", stage="sidecar-upload", facts=facts)

    settled = settled_on(channel, outcome, received)

    properties = parked(received, headers, "corr-incoming")
    assert channel.calls == [
        Published("", "s3-events.dead-letter", BODY, properties, mandatory=True, confirmed=True),
        ACK,
    ]
    assert settled == Settled(outcome, "s3-events.dead-letter", "corr-incoming")
    assert settled.kind == "dead-letter"


def test_a_split_republishes_each_record_with_the_original_properties_then_acks_once() -> None:
    channel = RecordingChannel()
    received = incoming()
    outcome = split()

    settled = settled_on(channel, outcome, received)

    assert channel.calls == [
        *(
            Published("", "s3-events", body, received.properties, mandatory=True, confirmed=True)
            for body in outcome.bodies
        ),
        ACK,
    ]
    assert settled == Settled(outcome, "2 x s3-events", "corr-incoming")
    assert settled.kind == "split"


@pytest.mark.parametrize("outcome", [retry(), split()], ids=["retry", "split"])
def test_a_user_id_not_ours_is_left_off_a_copy(outcome: Outcome) -> None:
    """The broker refuses a publish whose user_id is not the connection's own."""
    channel = RecordingChannel()
    settled_on(channel, outcome, incoming(user_id="s3-gateway"))
    assert channel.published
    assert {call.properties.user_id for call in channel.published} == {None}


# --- nothing lost when the broker does not take a copy ----------------------------------------

REFUSALS = [
    pika.exceptions.UnroutableError([]),
    pika.exceptions.NackError([]),
    pika.exceptions.StreamLostError("connection lost while waiting for the confirm"),
]
OUTCOMES: list[tuple[Outcome, int]] = [(retry(), 1), (dead_letter(), 1), (split(), 2)]
OUTCOME_IDS = ["retry", "dead-letter", "split's second record"]


@pytest.mark.parametrize("error", REFUSALS, ids=lambda error: type(error).__name__)
@pytest.mark.parametrize(("outcome", "failing_publish"), OUTCOMES, ids=OUTCOME_IDS)
def test_a_copy_the_broker_did_not_confirm_leaves_the_delivery_unacked(
    outcome: Outcome, failing_publish: int, error: Exception
) -> None:
    channel = RecordingChannel()
    channel.fail_confirm(error, publish_number=failing_publish)

    with pytest.raises(type(error)):
        settled_on(channel, outcome, incoming())

    assert channel.published[-1].confirmed is False
    assert (channel.acked, channel.nacked) == ([], [])


@pytest.mark.parametrize(
    "error",
    [
        pika.exceptions.ChannelClosedByBroker(404, "NOT_FOUND - no queue"),
        pika.exceptions.ConnectionClosedByBroker(320, "CONNECTION_FORCED - shutdown"),
    ],
    ids=lambda error: type(error).__name__,
)
@pytest.mark.parametrize("outcome", [outcome for outcome, _ in OUTCOMES], ids=OUTCOME_IDS)
def test_a_channel_gone_before_the_publish_leaves_the_delivery_unacked(
    outcome: Outcome, error: Exception
) -> None:
    channel = RecordingChannel()
    channel.close(error)

    with pytest.raises(type(error)):
        settled_on(channel, outcome, incoming())

    assert channel.calls == []


# --- headers AMQP cannot encode ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "received"),
    [
        (retry(), with_headers(**{"x-huge": 2**70})),
        (retry(), with_headers(**{"x-float": 1.5})),
        (retry(), with_headers(**{"x-text": "\ud800"})),
        (dataclasses.replace(retry(), correlation_id="r" * 300), incoming()),
        (split(), incoming(headers={"x-float": 0.5})),
    ],
    ids=["huge integer", "float", "lone surrogate", "correlation id over 255 bytes", "split"],
)
def test_a_copy_amqp_cannot_encode_is_dead_lettered_with_bare_properties(
    outcome: Outcome, received: Received
) -> None:
    """pika decodes values it cannot encode again; retrying such a message would loop forever."""
    channel = RecordingChannel()

    settled_on(channel, outcome, received)

    assert channel.calls == [*channel.published, ACK]
    assert [copy.body for copy in channel.published] == (
        list(outcome.bodies) if isinstance(outcome, Split) else [BODY]
    )
    for copy in channel.published:
        assert (copy.routing_key, copy.mandatory, copy.confirmed) == (
            "s3-events.dead-letter",
            True,
            True,
        )
        headers = copy.properties.headers
        assert headers["x-error"].startswith("properties AMQP cannot encode: ")
        assert headers["x-error-stage"] == "republish"
        assert copy.properties == pika.BasicProperties(headers=headers, delivery_mode=2)


@pytest.mark.parametrize(
    ("outcome", "received", "destination"),
    [
        (retry(), with_headers(**{"x-float": 1.5}), "s3-events.dead-letter"),
        (split(), incoming(headers={"x-float": 0.5}), "2 x s3-events.dead-letter"),
    ],
    ids=["retry", "split"],
)
def test_what_was_dead_lettered_for_unencodable_headers_is_reported_as_a_dead_letter(
    outcome: Retry | Split, received: Received, destination: str
) -> None:
    """The metric and the event's log line say what became of it, not what was asked."""
    channel = RecordingChannel()

    settled = settled_on(channel, outcome, received)

    assert (settled.kind, settled.destination) == ("dead-letter", destination)
    done = settled.outcome
    assert isinstance(done, DeadLetter)
    assert (done.reason, done.stage) == (
        channel.published[0].properties.headers["x-error"],
        "republish",
    )
    assert done.facts == dataclasses.replace(outcome.facts, stage="republish")
    report = EventReport.of(done, correlation_id=settled.correlation_id, seconds=0.1)
    assert report.outcome is EventOutcome.DEAD_LETTERED
    assert report.log_fields()["reason"] == done.reason


def test_a_dead_letter_for_unencodable_headers_that_is_not_confirmed_stays_unacked() -> None:
    channel = RecordingChannel()
    channel.fail_confirm(pika.exceptions.NackError([]))

    with pytest.raises(pika.exceptions.NackError):
        settled_on(channel, retry(), with_headers(**{"x-huge": 2**70}))

    assert [call.routing_key for call in channel.published] == ["s3-events.dead-letter"]
    assert channel.acked == []

"""The consumer's loop on a fake broker: what one message's failure costs (contract §6).

A handler that raised, or an outcome the broker refused, is that message's transient
failure: it is retried (or held back) while the other messages keep their outcomes, and
the connection stays. Only a lost connection reconnects, backing off further each time
until a message settles again; what a worker hands back to a lost connection is never
settled on the next one. On stop, nothing starts any more.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import pika
import pika.exceptions
import pytest

from s3_events_handler.adapters.rabbitmq.connection import BrokerSettings
from s3_events_handler.adapters.rabbitmq.consumer import Consumer
from s3_events_handler.application.messages import DeadLetter, Delivery, Done, Outcome
from s3_events_handler.application.retries import RetrySchedule
from s3_events_handler.domain.results import AlreadyArchived
from tests.unit.fake_broker import FakeBroker
from tests.unit.recording_channel import SETTINGS, Acked, Rejected
from tests.unit.recording_telemetry import RecordingTelemetry

DONE = Done(AlreadyArchived(key="clip.mxf"))
NOT_JSON = DeadLetter(reason="body is not JSON", stage="parse")
TIMEOUT = 10.0


def nacked() -> pika.exceptions.NackError:
    """What a confirming channel raises when the queue refused the message (reject-publish)."""
    return pika.exceptions.NackError([])


class Running:
    """A consumer on a fake broker, `run()` in a thread as the service's main thread runs it."""

    def __init__(
        self,
        handler: Callable[[Delivery], Outcome],
        *,
        grace: float = 5,
        settings: BrokerSettings = SETTINGS,
        **options: Any,
    ) -> None:
        self.broker = FakeBroker()
        self.slept: list[float] = []
        self.consumer = Consumer(
            cast(Any, self.broker),
            settings,
            handler,
            sleep=self.slept.append,
            poll_interval=0.02,
            **options,
        )
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(grace,), daemon=True)
        self.thread.start()
        assert wait_until(lambda: self.consumer.connects == 1), (
            "the consumer did not start consuming"
        )

    def _run(self, grace: float) -> None:
        try:
            self.consumer.run(grace_seconds=grace)
        except BaseException as error:  # surfaced by `stop`, not lost in the thread
            self.error = error

    def stop(self) -> None:
        self.consumer.stop()
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive(), "run() did not return after stop()"
        assert self.error is None, f"run() raised {self.error!r}"


@pytest.fixture
def start() -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(handler: Callable[[Delivery], Outcome], **options: Any) -> Running:
        running = Running(handler, **options)
        started.append(running)
        return running

    yield start
    for running in started:
        running.consumer.stop()
        running.thread.join(TIMEOUT)


def wait_until(condition: Callable[[], bool], timeout: float = TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)
    return True


def with_retries(retries: RetrySchedule) -> BrokerSettings:
    """`SETTINGS` with `retries`: the schedule the handler, the consumer and the settlement read."""
    return dataclasses.replace(SETTINGS, retries=retries)


def by_body(outcomes: dict[bytes, Outcome]) -> Callable[[Delivery], Outcome]:
    """A handler answering each body with its outcome; `RuntimeError` for `b"raises"`."""

    def handle(delivery: Delivery) -> Outcome:
        if delivery.body == b"raises":
            raise RuntimeError("a bug in telemetry")
        return outcomes.get(delivery.body, DONE)

    return handle


# -- a handler that raised ----------------------------------------------------------------------


def test_a_handler_that_raised_gets_its_message_retried_and_the_others_keep_their_outcomes(
    start: Callable[..., Running],
) -> None:
    running = start(by_body({}), concurrency=2)
    for body in (b"first", b"raises", b"third"):
        running.broker.deliver(body, pika.BasicProperties(headers={"x-attempt": 2}))
    channel = running.broker.channel
    assert wait_until(lambda: len(channel.acked) == 3), channel.calls

    [retry] = channel.published
    assert (retry.routing_key, retry.body, retry.confirmed) == (
        "s3-events.retry.30",
        b"raises",
        True,
    )
    assert retry.properties.headers["x-attempt"] == 3  # counted on, at the backoff of attempt 2
    assert sorted(channel.acked) == [1, 2, 3]
    assert channel.calls.index(Acked(2, multiple=False)) > channel.calls.index(retry)
    running.stop()
    assert running.consumer.connects == 1 and running.slept == []
    assert running.consumer.messages_handled == 3


def test_a_handler_that_raised_on_its_last_attempt_is_dead_lettered(
    start: Callable[..., Running],
) -> None:
    running = start(by_body({}), settings=with_retries(RetrySchedule(delays=(10,), max_attempts=3)))
    running.broker.deliver(b"raises", pika.BasicProperties(headers={"x-attempt": 3}))
    channel = running.broker.channel
    assert wait_until(lambda: channel.acked == [1]), channel.calls

    [dead] = channel.published
    assert dead.routing_key == "s3-events.dead-letter"
    assert dead.properties.headers["x-error"] == (
        "gave up after 3 attempts: RuntimeError: a bug in telemetry"
    )
    assert dead.properties.headers["x-error-stage"] == "received"
    running.stop()
    assert running.consumer.connects == 1


# -- an outcome the broker refused --------------------------------------------------------------


def test_a_dead_letter_the_broker_refuses_goes_to_the_retry_queue_instead(
    start: Callable[..., Running],
) -> None:
    running = start(by_body({b"not json": NOT_JSON}), concurrency=2)
    channel = running.broker.channel
    channel.fail_confirm(nacked(), publish_number=1)  # the dead-letter queue refuses it
    for body in (b"good", b"not json", b"good too"):
        running.broker.deliver(body)
    assert wait_until(lambda: len(channel.acked) == 3), channel.calls

    refused, instead = channel.published
    assert (refused.routing_key, refused.confirmed) == ("s3-events.dead-letter", False)
    assert (instead.routing_key, instead.body, instead.confirmed) == (
        "s3-events.retry.10",
        b"not json",
        True,
    )
    assert instead.properties.headers["x-attempt"] == 2
    assert sorted(channel.acked) == [1, 2, 3]
    running.stop()
    assert running.consumer.connects == 1 and running.slept == []


def test_a_message_no_queue_takes_is_held_unacked_then_handed_back_after_its_backoff(
    start: Callable[..., Running],
) -> None:
    running = start(
        by_body({b"not json": NOT_JSON}),
        concurrency=2,
        settings=with_retries(RetrySchedule(delays=(1,))),
    )
    channel = running.broker.channel
    channel.fail_confirm(nacked(), publish_number=1)  # the dead-letter queue refuses it,
    channel.fail_confirm(nacked(), publish_number=2)  # and so does the retry queue
    running.broker.deliver(b"not json")
    assert wait_until(lambda: len(channel.published) == 2), channel.calls
    refused_at = time.monotonic()
    running.broker.deliver(b"good")

    assert wait_until(lambda: channel.acked == [2]), channel.calls  # the others go on
    assert channel.requeued == []  # not straight back
    assert wait_until(lambda: channel.requeued == [1], timeout=3), channel.calls
    assert time.monotonic() - refused_at >= 0.9
    assert Rejected(1, requeue=True) in channel.calls
    running.stop()
    assert running.consumer.connects == 1 and 1 not in channel.acked


def test_a_queue_deleted_under_the_consumer_is_declared_again(
    start: Callable[..., Running],
) -> None:
    running = start(by_body({b"not json": NOT_JSON}))
    channel = running.broker.channel
    channel.fail_confirm(pika.exceptions.UnroutableError([]), publish_number=1)
    running.broker.deliver(b"not json")
    assert wait_until(lambda: channel.acked == [1]), channel.calls

    assert "s3-events.dead-letter" in channel.declared  # there when the message comes back
    assert [p.routing_key for p in channel.published] == [
        "s3-events.dead-letter",
        "s3-events.retry.10",
    ]
    running.stop()
    assert running.consumer.connects == 1


def test_a_lost_connection_still_means_a_reconnect(start: Callable[..., Running]) -> None:
    running = start(by_body({b"not json": NOT_JSON}))
    first = running.broker.channel
    first.fail_confirm(pika.exceptions.StreamLostError("gone"), publish_number=1)
    running.broker.deliver(b"not json")

    assert wait_until(lambda: running.consumer.connects == 2), first.calls
    assert first.acked == [] and first.requeued == []  # the broker redelivers it
    running.stop()


def test_an_outcome_handed_back_to_a_lost_connection_is_never_settled_on_the_next(
    start: Callable[..., Running],
) -> None:
    """A delivery tag names a message on its own channel only: the worker hands its outcome
    back to the connection the message came on, which, closed, never runs it."""
    release = threading.Event()

    def handle(delivery: Delivery) -> Outcome:
        release.wait(TIMEOUT)
        return NOT_JSON  # a dead letter: a publish and an ack, were it settled

    running = start(handle)
    running.broker.deliver(b"in hand")
    assert wait_until(lambda: running.consumer.in_hand == 1)
    lost = running.broker.channel
    running.broker.lose_connection()
    assert wait_until(lambda: running.consumer.connects == 2)
    release.set()

    assert wait_until(lambda: running.consumer.in_hand == 0)
    current = running.broker.channel
    assert current is not lost
    assert lost.calls == [] and current.calls == []  # neither published nor acked anywhere
    assert running.consumer.messages_handled == 0
    running.stop()


# -- the reconnect backoff -----------------------------------------------------------------------


def test_the_reconnect_backoff_grows_until_a_message_settles_again(
    start: Callable[..., Running],
) -> None:
    running = start(by_body({}), reconnect_delays=(0.01, 0.02, 0.03))
    consumer, broker = running.consumer, running.broker
    for connects in (2, 3, 4, 5):
        broker.lose_connection()
        assert wait_until(lambda: consumer.connects == connects)  # noqa: B023
    assert running.slept == [0.01, 0.02, 0.03, 0.03]  # a connection that opens is no reset

    broker.deliver(b"event")
    assert wait_until(lambda: broker.channel.acked == [1])
    broker.lose_connection()
    assert wait_until(lambda: consumer.connects == 6)
    assert running.slept[-1] == 0.01  # a message settled: the connection works again
    running.stop()


# -- stopping ------------------------------------------------------------------------------------


def test_stop_hands_back_at_once_every_message_not_started_and_starts_none(
    start: Callable[..., Running],
) -> None:
    release = threading.Event()
    handled: list[bytes] = []

    def handle(delivery: Delivery) -> Outcome:
        handled.append(delivery.body)
        release.wait(TIMEOUT)
        return DONE

    running = start(handle, concurrency=2)
    for body in (b"a", b"b", b"c", b"d", b"e"):  # prefetched beyond the two workers
        running.broker.deliver(body)
    channel = running.broker.channel
    assert wait_until(lambda: len(handled) == 2)

    running.consumer.stop()
    assert wait_until(lambda: sorted(channel.requeued) == [3, 4, 5], timeout=2), channel.calls
    release.set()
    running.thread.join(TIMEOUT)
    assert handled == [b"a", b"b"]
    assert sorted(channel.acked) == [1, 2]


def test_stop_hands_back_a_held_message_at_once(start: Callable[..., Running]) -> None:
    running = start(by_body({b"not json": NOT_JSON}))  # held for 10 s, the first level
    channel = running.broker.channel
    channel.fail_confirm(nacked(), publish_number=1)
    channel.fail_confirm(nacked(), publish_number=2)
    running.broker.deliver(b"not json")
    assert wait_until(lambda: len(channel.published) == 2), channel.calls

    running.stop()
    assert channel.requeued == [1] and channel.acked == []


def test_a_message_held_while_the_consumer_stops_goes_back_before_it_exits(
    start: Callable[..., Running],
) -> None:
    release = threading.Event()

    def handle(delivery: Delivery) -> Outcome:
        release.wait(TIMEOUT)
        return NOT_JSON

    running = start(handle)
    channel = running.broker.channel
    channel.fail_confirm(nacked(), publish_number=1)
    channel.fail_confirm(nacked(), publish_number=2)
    running.broker.deliver(b"not json")
    assert wait_until(lambda: running.consumer.in_hand == 1)
    running.consumer.stop()  # the message in hand finishes, and no queue takes it
    release.set()

    running.thread.join(TIMEOUT)
    assert channel.requeued == [1] and channel.acked == []


def test_no_message_starts_once_stop_returned_whatever_the_workers_are_doing(
    start: Callable[..., Running],
) -> None:
    """Workers taking messages as fast as they can while the consumer stops: each message
    either began before `stop()` returned and is acked, or never started and went back to
    the queue (taken back by the I/O thread, or handed back by a worker that took it)."""
    for before_stop, workers in itertools.product((0, 0.002, 0.005, 0.02), (2, 4)):
        began: dict[int, float] = {}

        def handle(delivery: Delivery) -> Outcome:
            began[int(delivery.body)] = time.monotonic()  # noqa: B023
            time.sleep(0.0002)
            return DONE

        running = start(handle, concurrency=workers)
        for number in range(1, 201):  # all delivered in one pump, tags 1 to 200
            running.broker.deliver(str(number).encode())
        assert wait_until(lambda: len(began) > 0)  # noqa: B023
        time.sleep(before_stop)
        running.consumer.stop()
        stopped = time.monotonic()
        running.thread.join(TIMEOUT)

        channel = running.broker.channel
        assert all(at < stopped for at in began.values())
        assert sorted(channel.acked) == sorted(began)
        assert sorted([*channel.acked, *channel.requeued]) == list(range(1, 201))  # each once


def test_an_events_time_runs_from_when_a_worker_started_it_not_from_its_delivery(
    start: Callable[..., Running],
) -> None:
    """The duration a metric shows is the event's work: not its wait behind its object."""

    def handle(delivery: Delivery) -> Outcome:
        time.sleep(0.2)
        return DONE

    telemetry = RecordingTelemetry()
    running = start(
        handle, concurrency=2, ordering_key=lambda body: "one object", telemetry=telemetry
    )
    running.broker.deliver(b"first")
    running.broker.deliver(b"second")  # waits for the first
    assert wait_until(lambda: len(telemetry.reports) == 2)
    running.stop()
    for report in telemetry.reports:
        assert 0.2 <= report.seconds < 0.3  # not 0.4 for the second, which waited 0.2 s

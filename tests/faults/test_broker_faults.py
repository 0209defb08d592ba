"""The broker goes away, the consumer is told to stop, a downstream call outlasts heartbeats.

The consumer runs as a process (`s3-events-handler consume`) against the real broker;
every event is distinct (own key, own x-viaa-request-id) and published persistent. In
every case each event ends with one transfer request (repeats only with the same
message_id) and one sidecar, nothing in the dead-letter queue, and the process alive
until it is told to stop.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.service import RunningService, default_concurrency
from tests.faults import broker_harness as harness
from tests.support import amqp
from tests.support.mediahaven_server import RECORDS_PATH, Fault

CONNECTED = "connected to the broker at "
DEFAULT_CONCURRENCY = default_concurrency()
LOST = "broker connection lost"


def alive(service: RunningService) -> bool:
    return service.process is not None and service.process.poll() is None


def consumer_pid(service: RunningService) -> int:
    assert service.process is not None
    return service.process.pid


def slow_searches(service: RunningService, *delays: float) -> None:
    """The next MediaHaven searches (the archived check, one per event) take this long."""
    service.mediahaven.fail_next(
        RECORDS_PATH, *(Fault.slow(delay) for delay in delays), method="GET"
    )


def searches(service: RunningService) -> int:
    return len(service.mediahaven.requests_to(RECORDS_PATH, method="GET"))


def assert_all_processed_once(
    service: RunningService, events: list[harness.Event], transfers: harness.Transfers
) -> harness.Tally:
    """Every event has its transfer request and its sidecar; nothing waits or is dead."""
    s = service.settings
    processed = transfers.take_until(len(events), timeout=60)
    assert processed == len(events), (
        f"{processed} of {len(events)} events processed\n{service.log()}"
    )
    depths = harness.wait_until_settled(s, timeout=30)
    transfers.take_rest()  # a repeat published after the last new key came
    result = harness.tally(events, transfers, service)
    assert result.clean, f"{result}\n{service.log()}"
    assert depths[s.incoming_queue] == (0, 0), depths
    assert depths[s.dead_letter_queue] == (0, 0), depths
    assert all(depths[s.retry_queue(level)] == (0, 0) for level in s.retries.delays), depths
    return result


# -- 1. broker loss while events flow ---------------------------------------------------

FLOWING = 0.15  # seconds each search takes: events keep flowing, one in hand at a time
IN_HAND = 2.0  # the search during which the broker goes away: the fault lands mid-event
IN_FLIGHT = "waiting for message"  # the consumer lost its connection with messages in hand
# Seconds: a batch of prefetched events in hand that long, well beyond what closing a
# connection takes (rabbitmqctl starts a VM of its own: a second or more, two when busy).
MANY_IN_HAND_SEARCH = 4.0


def searches_slow_at(*numbers: int, total: int) -> list[float]:
    """Search delays in order: `IN_HAND` for the `numbers`-th searches, else `FLOWING`."""
    return [IN_HAND if n in numbers else FLOWING for n in range(1, total + 1)]


def wait_for_search(service: RunningService, number: int) -> None:
    """Until the `number`-th search has begun (and, when it is a slow one, still runs)."""
    assert amqp.wait_until(lambda: searches(service) >= number, timeout=30), service.log()


def redo_figures(service: RunningService, events: list[harness.Event]) -> str:
    uploads = len(service.ftp.stored)
    skipped = sum(e.get("result") == "already-handled" for e in service.outcome_lines())
    return f"{uploads - len(events)} sidecar re-uploads, {skipped} deliveries already handled"


def wait_for_several_in_hand(service: RunningService, timeout: float = 20) -> None:
    """Until the consumer's metrics say more than one event is being handled, and still are
    half a second later: a batch in its slow searches, not redelivered copies that find
    their events already handled and are through in milliseconds."""
    deadline = time.monotonic() + timeout
    seen = "nothing"
    held_since: float | None = None
    while time.monotonic() < deadline:
        _, metrics = service.get("/metrics")
        match = re.search(r"^s3_events_in_progress (\S+)$", metrics, re.MULTILINE)
        if match and float(match.group(1)) > 1:
            held_since = held_since or time.monotonic()
            if time.monotonic() - held_since >= 0.5:
                return
        else:
            held_since = None
        seen = match.group(0) if match else metrics[-300:]
        time.sleep(0.05)
    raise AssertionError(f"never more than one in hand within {timeout} s: {seen}\n{service.log()}")


def close_and_wait_for_the_reconnection(service: RunningService, when: str) -> float:
    """Make the broker close the consumer's one connection; the seconds until it was back."""
    process_id, port = consumer_pid(service), service.settings.port
    closed = harness.close_connections_of(process_id, port)
    began = time.monotonic()
    assert len(closed) == 1, f"expected the consumer's one connection, found {closed}"
    fresh = harness.wait_for_new_connection(process_id, port, closed, timeout=20)
    assert fresh is not None, f"no reconnection after the close at {when}"
    assert alive(service), service.log()
    return round(time.monotonic() - began, 1)


def assert_three_losses_survived(service: RunningService) -> None:
    """Three connections lost, four made, each time back after the first backoff; alive
    until told to stop, then a clean exit."""
    assert alive(service), service.log()
    assert harness.count_in_log(service, CONNECTED) == 4, service.log()
    assert harness.count_in_log(service, LOST) == 3, service.log()
    assert harness.reconnect_delays(service) == [1, 1, 1], service.log()
    assert service.stop_consumer() == 0


def test_the_broker_closing_the_consumers_connection_loses_and_repeats_nothing(
    service: RunningService, examples: Path
) -> None:
    """One event in hand at a time (CONCURRENCY=1), so each close lands mid-event by the
    count of searches; several in hand: the test after this one."""
    events = harness.essence_events(examples, "closed", 40)
    closes_at = (9, 22, 35)  # search numbers; a redelivery searches again
    slow_searches(service, *searches_slow_at(*closes_at, total=len(events) + len(closes_at)))
    service.start_consumer(CONCURRENCY="1")
    harness.publish_persistent(service, events)
    transfers = harness.Transfers(service.settings)

    reconnect_seconds: list[float] = []
    for number in closes_at:
        wait_for_search(service, number)
        reconnect_seconds.append(close_and_wait_for_the_reconnection(service, f"search {number}"))

    result = assert_all_processed_once(service, events, transfers)
    assert harness.count_in_log(service, IN_FLIGHT) == 3, service.log()
    assert_three_losses_survived(service)
    print(
        f"\nbroker closed the connection 3x, each time mid-event: {result}; "
        f"{redo_figures(service, events)}; reconnected after {reconnect_seconds} s"
    )


def test_the_broker_closing_the_connection_with_many_events_in_hand_loses_and_repeats_nothing(
    service: RunningService, examples: Path
) -> None:
    """The default concurrency, every search slow enough that a worker per prefetched event
    is in hand at each close: their outcomes are dropped (their delivery tags died with the
    channel), the broker redelivers them, and each redelivered copy waits for its stale one."""
    events = harness.essence_events(examples, "closed-many", 4 * DEFAULT_CONCURRENCY)
    slow_searches(service, *[MANY_IN_HAND_SEARCH] * 200)
    service.start_consumer()
    harness.publish_persistent(service, events)
    transfers = harness.Transfers(service.settings)

    # A batch is in hand at each close: the first once some events are through, the
    # others once a batch started on the new connection. Until then, the workers in hand
    # are the lost connection's (they carry on), whose deliveries the next close would
    # not count; a batch on the new connection is one whose searches began after the
    # reconnection.
    searched_before = 0
    for done in (DEFAULT_CONCURRENCY // 2, DEFAULT_CONCURRENCY, 3 * DEFAULT_CONCURRENCY // 2):
        assert transfers.take_until(done, timeout=30) >= done, service.log()
        wait_for_search(service, searched_before + 2)
        # A batch started together ends together: wait for the next one to be in hand.
        wait_for_several_in_hand(service)
        close_and_wait_for_the_reconnection(service, f"{done} events done")
        searched_before = searches(service)

    result = assert_all_processed_once(service, events, transfers)
    in_hand = [
        len(line.split(" of the lost channel")[0].split(","))
        for line in harness.log_messages(service)
        if IN_FLIGHT in line
    ]
    assert len(in_hand) == 3 and min(in_hand) > 1, service.log()  # several in hand each time
    assert_three_losses_survived(service)
    print(
        f"\nbroker closed the connection 3x with {in_hand} messages in hand: {result}; "
        f"{redo_figures(service, events)}"
    )


@pytest.mark.usefixtures("broker_restartable")
def test_a_broker_restart_loses_and_repeats_nothing(
    service: RunningService, examples: Path
) -> None:
    s = service.settings
    events = harness.essence_events(examples, "restart", 30)
    stop_at = 9
    slow_searches(service, *searches_slow_at(stop_at, total=len(events) + 1))
    service.start_consumer()
    process_id = consumer_pid(service)
    harness.publish_persistent(service, events)
    assert all(harness.durable_queues(s).values()), harness.durable_queues(s)
    transfers = harness.Transfers(s)
    wait_for_search(service, stop_at)

    began = time.monotonic()
    with harness.broker_app_stopped() as outage:
        # The consumer keeps trying, backing off: 1 s, then 2 s, ...
        assert amqp.wait_until(
            lambda: 2 in harness.reconnect_delays(service) or not alive(service), timeout=30
        ), service.log()
        assert alive(service), service.log()
        down_for = time.monotonic() - began
    fresh = harness.wait_for_new_connection(process_id, s.port, [], timeout=40)
    assert fresh is not None, f"the consumer did not reconnect\n{service.log()}"
    back_after = time.monotonic() - began

    result = assert_all_processed_once(service, events, transfers)
    assert alive(service), service.log()
    assert harness.count_in_log(service, IN_FLIGHT) == 1, service.log()
    delays = harness.reconnect_delays(service)
    assert delays[:2] == [1, 2], delays
    assert delays == sorted(delays), delays
    assert harness.count_in_log(service, CONNECTED) == 2, service.log()
    assert service.stop_consumer() == 0
    print(
        f"\nbroker app restarted mid-event {stop_at} of {len(events)}: {result}; "
        f"{redo_figures(service, events)}; stop_app {outage.stopped_in:.1f} s, broker down "
        f"{down_for:.1f} s, start_app {outage.started_in:.1f} s, consumer back "
        f"{back_after:.1f} s after stop_app (backoff {delays})"
    )


def sigterm_then_restart(
    service: RunningService,
    events: list[harness.Event],
    transfers: harness.Transfers,
    finished_before_exit: int,
    says: str,
) -> str:
    """SIGTERM the consumer: it exits 0 within 10 s, saying `says` once, with exactly
    `finished_before_exit` events through and the others queued, none retried or dead.
    Then a consumer started again processes every event once. What happened, in words."""
    s = service.settings
    process = service.process
    assert process is not None
    process.send_signal(signal.SIGTERM)
    began = time.monotonic()
    try:
        status = process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    exit_seconds = time.monotonic() - began
    assert status == 0, service.log()
    assert exit_seconds < 10
    assert harness.count_in_log(service, says) == 1, service.log()

    transfers.take_rest()
    depths = harness.queue_depths(s)
    assert len(transfers.keys) == finished_before_exit, service.log()
    assert depths[s.incoming_queue] == (len(events) - finished_before_exit, 0), depths
    assert depths[s.dead_letter_queue] == (0, 0), depths
    assert all(depths[s.retry_queue(level)] == (0, 0) for level in s.retries.delays), depths

    service.start_consumer()
    result = assert_all_processed_once(service, events, transfers)
    assert service.stop_consumer() == 0
    return (
        f"exit {status} after {exit_seconds:.1f} s, {finished_before_exit} processed and "
        f"{depths[s.incoming_queue][0]} queued at exit; after a restart {result}"
    )


# -- 2. SIGTERM with events queued -----------------------------------------------------


@pytest.mark.parametrize(
    ("grace", "in_hand_seconds", "finished_before_exit", "says"),
    [
        pytest.param(
            5,
            2.0,
            3,
            "stopped consuming; closing the broker connection",
            id="the-message-in-hand-finishes-within-the-grace",
        ),
        pytest.param(
            2,
            8.0,
            2,
            "left unacked for redelivery",
            id="the-message-in-hand-outlasts-the-grace",
        ),
    ],
)
def test_sigterm_with_events_queued_exits_0_and_loses_nothing(
    service: RunningService,
    examples: Path,
    grace: int,
    in_hand_seconds: float,
    finished_before_exit: int,
    says: str,
) -> None:
    s = service.settings
    events = harness.essence_events(examples, "sigterm", 10)
    slow_searches(service, 0.3, 0.3, in_hand_seconds)  # the third event is in hand
    # One event in hand at a time, so exactly the third is in hand; several: the next test.
    service.start_consumer(SHUTDOWN_GRACE_SECONDS=str(grace), CONCURRENCY="1")
    harness.publish_persistent(service, events)
    transfers = harness.Transfers(s)
    assert transfers.take_until(2, timeout=20) == 2, service.log()
    assert amqp.wait_until(lambda: searches(service) == 3, timeout=10), service.log()
    assert len(transfers.keys) == 2  # the third is inside its slow search

    stopped = sigterm_then_restart(service, events, transfers, finished_before_exit, says)
    print(f"\nSIGTERM (grace {grace} s, message in hand {in_hand_seconds} s): {stopped}")


@pytest.mark.parametrize(
    ("grace", "in_hand_seconds", "finished_before_exit", "says"),
    [
        pytest.param(
            5,
            2.0,
            DEFAULT_CONCURRENCY,
            "stopped consuming; closing the broker connection",
            id="every-message-in-hand-finishes-within-the-grace",
        ),
        pytest.param(
            2,
            8.0,
            0,
            "left unacked for redelivery",
            id="the-messages-in-hand-outlast-the-grace",
        ),
    ],
)
def test_sigterm_with_many_events_in_hand_exits_0_and_loses_nothing(
    service: RunningService,
    examples: Path,
    grace: int,
    in_hand_seconds: float,
    finished_before_exit: int,
    says: str,
) -> None:
    """The default concurrency and prefetch: a worker per prefetched event, each inside a slow
    search when SIGTERM comes; the events not delivered yet stay in the queue."""
    s = service.settings
    events = harness.essence_events(examples, "sigterm-many", 2 * DEFAULT_CONCURRENCY)
    slow_searches(service, *[in_hand_seconds] * DEFAULT_CONCURRENCY)
    service.start_consumer(SHUTDOWN_GRACE_SECONDS=str(grace))
    harness.publish_persistent(service, events)
    transfers = harness.Transfers(s)
    assert amqp.wait_until(lambda: searches(service) == DEFAULT_CONCURRENCY, timeout=10), (
        service.log()
    )

    stopped = sigterm_then_restart(service, events, transfers, finished_before_exit, says)
    print(
        f"\nSIGTERM with {DEFAULT_CONCURRENCY} in hand (grace {grace} s, each "
        f"{in_hand_seconds} s): {stopped}"
    )


def test_sigterm_with_a_prefetch_deeper_than_the_workers_starts_nothing_more(
    service: RunningService, examples: Path
) -> None:
    """RABBIT_MQ_PREFETCH 10 for 2 workers: two events in hand (each inside a slow search)
    and eight more delivered, waiting for a worker, when SIGTERM comes. None of the eight
    starts after the signal (MediaHaven sees no search after it, so no upload can be cut
    off by the grace); they are back in the queue at once, while the two still run; a
    consumer started again processes every event once."""
    s = service.settings
    workers, prefetch, in_hand_seconds = 2, 10, 3.0
    events = harness.essence_events(examples, "sigterm-deep", 12)
    slow_searches(service, *[in_hand_seconds] * workers)
    service.start_consumer(CONCURRENCY=str(workers), RABBIT_MQ_PREFETCH=str(prefetch))
    harness.publish_persistent(service, events)
    transfers = harness.Transfers(s)

    def ready() -> int:
        return amqp.message_count(s.host, s.port, s.incoming_queue)

    def all_delivered_two_in_hand() -> bool:
        return searches(service) == workers and ready() == len(events) - prefetch

    assert amqp.wait_until(all_delivered_two_in_hand, timeout=10), service.log()
    process = service.process
    assert process is not None
    process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    # Back in the queue while the two in hand are still inside their searches.
    assert amqp.wait_until(lambda: ready() == len(events) - workers, timeout=2), service.log()
    handed_back_after = time.monotonic() - signalled
    assert process.wait(timeout=15) == 0, service.log()
    exit_seconds = time.monotonic() - signalled

    searched_at = [r.at for r in service.mediahaven.requests_to(RECORDS_PATH, method="GET")]
    assert len(searched_at) == workers and max(searched_at) < signalled, service.log()
    assert harness.count_in_log(service, "stopped consuming; closing the broker connection") == 1
    transfers.take_rest()
    assert len(transfers.keys) == workers, service.log()  # the two in hand finished
    depths = harness.queue_depths(s)
    assert depths[s.incoming_queue] == (len(events) - workers, 0), depths
    assert depths[s.dead_letter_queue] == (0, 0), depths
    assert all(depths[s.retry_queue(level)] == (0, 0) for level in s.retries.delays), depths

    service.start_consumer()
    result = assert_all_processed_once(service, events, transfers)
    assert service.stop_consumer() == 0
    print(
        f"\nSIGTERM with {workers} in hand and {prefetch - workers} waiting for a worker: "
        f"those back in the queue after {handed_back_after:.2f} s, none started; exit 0 "
        f"after {exit_seconds:.1f} s; after a restart {result}"
    )


# -- 3. a slow downstream call and a short heartbeat ------------------------------------


def test_a_downstream_call_longer_than_two_heartbeats_keeps_the_connection(
    service: RunningService, examples: Path
) -> None:
    s = service.settings
    [event] = harness.essence_events(examples, "heartbeat", 1)
    slow_searches(service, 7.0)
    service.start_consumer(RABBIT_MQ_HEARTBEAT="2", HTTP_TIMEOUT_SECONDS="20")
    process_id = consumer_pid(service)
    [connection] = harness.connections_of(process_id, s.port)
    assert connection.heartbeat == 2  # the setting reached the broker

    began = time.monotonic()
    harness.publish_persistent(service, [event])
    transfers = harness.Transfers(s)
    assert transfers.take_until(1, timeout=30) == 1, service.log()
    took = time.monotonic() - began

    assert took >= 6.5  # the search took over three heartbeat intervals
    assert harness.connections_of(process_id, s.port) == [connection]
    assert harness.count_in_log(service, CONNECTED) == 1, service.log()
    assert harness.count_in_log(service, LOST) == 0, service.log()
    result = assert_all_processed_once(service, [event], transfers)
    assert service.stop_consumer() == 0
    print(f"\nheartbeat 2 s, search 7 s: processed in {took:.1f} s on one connection; {result}")

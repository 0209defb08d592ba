"""The Prometheus telemetry and the health it keeps, on a registry of each test's own, and
the HTTP endpoint that serves them (contract §7)."""

from __future__ import annotations

import select
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from s3_events_handler.adapters.health import Health, StatusServer, stall_limit
from s3_events_handler.adapters.memory import InMemoryLedger
from s3_events_handler.adapters.metrics import PrometheusTelemetry, process_registry
from s3_events_handler.application.handler import MessageHandler
from s3_events_handler.application.messages import Delivery, Done, EventFacts, Retry
from s3_events_handler.application.retries import RetrySchedule
from s3_events_handler.application.telemetry import EventOutcome, EventReport, System
from s3_events_handler.domain.errors import ServiceUnavailable
from s3_events_handler.domain.model import LedgerEntry
from tests.support.clock import Clock
from tests.support.loopback import LOOPBACK, free_port
from tests.unit.builders import World

LIMIT = 150.0
NOW = 1_700_000_000.0


def report(outcome: EventOutcome, kind: str = "created", seconds: float = 0.3) -> EventReport:
    return EventReport(outcome, EventFacts(kind=kind), "c-1", seconds)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    found = registry.get_sample_value(name, labels)
    assert found is not None, f"no sample {name}{labels}"
    return found


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def health(clock: Clock) -> Health:
    return Health(LIMIT, clock=clock)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def telemetry(registry: CollectorRegistry, health: Health) -> PrometheusTelemetry:
    return PrometheusTelemetry(registry, health, version="2.0.0", clock=lambda: NOW)


# --- metrics --------------------------------------------------------------------------------


def test_every_series_is_there_at_zero_before_the_first_event(
    registry: CollectorRegistry, telemetry: PrometheusTelemetry
) -> None:
    for kind in ("created", "removed"):
        for outcome in ("done", "skipped", "retried", "dead_lettered", "split"):
            assert value(registry, "s3_events_total", kind=kind, outcome=outcome) == 0
            labels = {"kind": kind, "outcome": outcome}
            assert value(registry, "s3_events_duration_seconds_count", **labels) == 0
    for system in ("mediahaven", "pid", "organisations", "ftp", "broker", "ledger"):
        assert value(registry, "s3_events_downstream_errors_total", system=system) == 0
    assert value(registry, "s3_events_last_done_timestamp_seconds") == 0
    assert value(registry, "s3_events_build_info", version="2.0.0") == 1


def test_a_finished_event_is_counted_and_timed_by_kind_and_outcome(
    registry: CollectorRegistry, telemetry: PrometheusTelemetry
) -> None:
    telemetry.event_finished(report(EventOutcome.DONE, seconds=0.3))
    telemetry.event_finished(report(EventOutcome.DEAD_LETTERED, kind="removed", seconds=2.0))
    assert value(registry, "s3_events_total", kind="created", outcome="done") == 1
    assert value(registry, "s3_events_total", kind="removed", outcome="dead_lettered") == 1
    done = {"kind": "created", "outcome": "done"}
    assert value(registry, "s3_events_duration_seconds_sum", **done) == pytest.approx(0.3)
    assert value(registry, "s3_events_duration_seconds_bucket", le="0.5", **done) == 1
    assert value(registry, "s3_events_duration_seconds_bucket", le="0.25", **done) == 0


@pytest.mark.parametrize(
    ("outcome", "last_done"),
    [
        (EventOutcome.DONE, NOW),
        (EventOutcome.SKIPPED, NOW),
        (EventOutcome.RETRIED, 0),
        (EventOutcome.DEAD_LETTERED, 0),
        (EventOutcome.SPLIT, 0),
    ],
)
def test_only_a_done_or_skipped_event_moves_the_last_done_time(
    registry: CollectorRegistry,
    telemetry: PrometheusTelemetry,
    outcome: EventOutcome,
    last_done: float,
) -> None:
    telemetry.event_finished(report(outcome))
    assert value(registry, "s3_events_last_done_timestamp_seconds") == last_done


def test_in_progress_counts_events_taken_up_and_not_yet_through(
    registry: CollectorRegistry, telemetry: PrometheusTelemetry
) -> None:
    telemetry.event_started()
    telemetry.event_started()
    telemetry.event_handled()
    assert value(registry, "s3_events_in_progress") == 1


def test_only_a_connection_after_the_first_is_a_reconnect(
    registry: CollectorRegistry, telemetry: PrometheusTelemetry
) -> None:
    telemetry.connected()
    assert value(registry, "s3_events_broker_reconnects_total") == 0
    telemetry.disconnected()
    telemetry.disconnected()  # the stop after a loss says it again
    telemetry.connected()
    assert value(registry, "s3_events_broker_reconnects_total") == 1


def test_ledger_hits_and_downstream_errors_are_counted(
    registry: CollectorRegistry, telemetry: PrometheusTelemetry
) -> None:
    telemetry.ledger_hit()
    telemetry.downstream_error(System.PID)
    telemetry.downstream_error(System.PID)
    assert value(registry, "s3_events_ledger_hits_total") == 1
    assert value(registry, "s3_events_downstream_errors_total", system="pid") == 2
    assert value(registry, "s3_events_downstream_errors_total", system="ftp") == 0


def test_no_created_series_stand_beside_the_counters_and_histograms(
    registry: CollectorRegistry, telemetry: PrometheusTelemetry
) -> None:
    telemetry.event_finished(report(EventOutcome.DONE))
    telemetry.downstream_error(System.FTP)
    exposition = generate_latest(registry).decode()
    assert "_created" not in exposition


def test_the_broker_connection_is_a_gauge_of_one_while_consuming(
    registry: CollectorRegistry, telemetry: PrometheusTelemetry
) -> None:
    assert value(registry, "s3_events_broker_connected") == 0
    telemetry.connected()
    assert value(registry, "s3_events_broker_connected") == 1
    telemetry.disconnected()
    assert value(registry, "s3_events_broker_connected") == 0


def test_an_events_age_is_measured_from_its_event_time_to_its_outcome(
    registry: CollectorRegistry, telemetry: PrometheusTelemetry
) -> None:
    facts = EventFacts(kind="created", event_time=NOW - 42.0)
    telemetry.event_finished(EventReport(EventOutcome.DONE, facts, "c-1", 0.3))
    telemetry.event_finished(report(EventOutcome.DEAD_LETTERED))  # no eventTime: no age
    assert value(registry, "s3_events_event_age_seconds_count", kind="created") == 1
    assert value(registry, "s3_events_event_age_seconds_sum", kind="created") == 42.0
    assert value(registry, "s3_events_event_age_seconds_bucket", kind="created", le="15.0") == 0
    assert value(registry, "s3_events_event_age_seconds_bucket", kind="created", le="60.0") == 1


def test_two_registries_keep_apart(health: Health) -> None:
    """Each process (and each test) owns its registry: nothing global to leak between them."""
    first, second = process_registry(), process_registry()
    PrometheusTelemetry(first, health, version="1").ledger_hit()
    PrometheusTelemetry(second, health, version="1")
    assert value(first, "s3_events_ledger_hits_total") == 1
    assert value(second, "s3_events_ledger_hits_total") == 0
    assert b"process_start_time_seconds" in generate_latest(first)


# --- health ---------------------------------------------------------------------------------


def test_the_stall_limit_covers_the_longest_wait_the_loop_may_make() -> None:
    assert stall_limit(heartbeat=60, grace=20, blocked_timeout=300) == 330
    assert stall_limit(heartbeat=600, grace=20, blocked_timeout=300) == 1230
    assert stall_limit(heartbeat=2, grace=900, blocked_timeout=300) == 930


def test_alive_until_the_loop_has_not_come_round_for_longer_than_the_limit(
    clock: Clock, health: Health, telemetry: PrometheusTelemetry
) -> None:
    clock.now += LIMIT
    assert health.live() == (True, "ok")
    clock.now += 1
    alive, why = health.live()
    assert not alive and "has not come round for 151 s" in why
    telemetry.loop_tick()
    assert health.live() == (True, "ok")


def test_ready_while_connected_and_consuming_and_not_stuck(
    clock: Clock, health: Health, telemetry: PrometheusTelemetry
) -> None:
    assert health.ready()[0] is False  # not connected yet
    telemetry.connected()
    assert health.ready() == (True, "ready")
    telemetry.disconnected()
    assert health.ready() == (False, "not consuming: not connected to the broker")
    telemetry.connected()
    clock.now += LIMIT + 1
    assert health.ready()[0] is False


def test_not_ready_from_the_stop_on_while_alive_until_the_exit(
    health: Health, telemetry: PrometheusTelemetry
) -> None:
    """An orchestrator stops counting on a consumer that finishes its messages in hand, but
    must not kill it for that."""
    telemetry.connected()
    telemetry.stopping()
    assert health.ready() == (False, "stopping: finishing the messages in hand")
    assert health.live() == (True, "ok")
    telemetry.loop_tick()  # still settling what it has: still not ready
    assert health.ready()[0] is False


def test_not_ready_from_a_ledger_failure_until_a_ledger_statement_succeeds(
    registry: CollectorRegistry, health: Health, telemetry: PrometheusTelemetry
) -> None:
    """Without its ledger every event is retried: the consumer is alive, but not ready."""
    telemetry.connected()
    telemetry.downstream_error(System.LEDGER)
    assert health.ready() == (
        False,
        "ledger unavailable: its last statement failed; ready when one succeeds",
    )
    assert health.live() == (True, "ok")
    assert value(registry, "s3_events_downstream_errors_total", system="ledger") == 1
    telemetry.ledger_answered()
    assert health.ready() == (True, "ready")


def test_another_systems_failure_leaves_the_service_ready(
    health: Health, telemetry: PrometheusTelemetry
) -> None:
    """A MediaHaven outage is waited out in the retry queues; readiness follows the broker
    and the ledger only."""
    telemetry.connected()
    for system in System:
        if system is not System.LEDGER:
            telemetry.downstream_error(system)
    assert health.ready() == (True, "ready")


# --- the endpoint ---------------------------------------------------------------------------


@pytest.fixture
def server(registry: CollectorRegistry, health: Health) -> Iterator[StatusServer]:
    server = StatusServer(port=free_port(), registry=registry, health=health)
    server.start()
    yield server
    server.stop()


def get(server: StatusServer, path: str, accept: str = "") -> tuple[int, str, str]:
    request = urllib.request.Request(f"http://{LOOPBACK}:{server.port}{path}")
    if accept:
        request.add_header("Accept", accept)
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


def test_the_endpoint_serves_the_metrics_and_the_probes(
    server: StatusServer, clock: Clock, telemetry: PrometheusTelemetry
) -> None:
    status, content_type, body = get(server, "/metrics")
    assert (status, content_type) == (200, "text/plain; version=0.0.4; charset=utf-8")
    assert 's3_events_total{kind="created",outcome="done"} 0.0' in body
    assert get(server, "/healthz")[::2] == (200, "ok\n")
    assert get(server, "/readyz")[0] == 503
    telemetry.connected()
    assert get(server, "/readyz")[::2] == (200, "ready\n")
    clock.now += LIMIT + 1
    assert get(server, "/healthz")[0] == 503
    assert get(server, "/nowhere")[0] == 404


class SwitchedLedger(InMemoryLedger):
    """The in-memory ledger, failing as a database out of reach does while `down`."""

    down = False

    def begin_delivery(self, digest: str) -> int:
        self._reach()
        return super().begin_delivery(digest)

    def claim(self, identity: str) -> LedgerEntry | None:
        self._reach()
        return super().claim(identity)

    def claim_pid(self, identity: str, pid: str) -> str:
        self._reach()
        return super().claim_pid(identity, pid)

    def _reach(self) -> None:
        if self.down:
            raise ServiceUnavailable(
                "ledger database: no connection within 10 s", system=System.LEDGER
            )


def test_a_ledger_failure_is_counted_and_not_ready_until_the_ledger_answers_again(
    server: StatusServer, telemetry: PrometheusTelemetry, examples: Path
) -> None:
    """Through the handler that counts failures and the ledger's answers, to the probe and the
    scrape."""
    world = World()
    switched = SwitchedLedger()
    handler = MessageHandler(
        ingest=world.ingest_on(world.records, ledger=switched),
        remove=world.remove,
        retries=RetrySchedule(),
        unfinished=switched,
        telemetry=telemetry,
    )
    body = (examples / "event-essence-created.json").read_bytes()
    telemetry.connected()
    assert isinstance(handler.handle(Delivery(body=body)), Done)
    assert get(server, "/readyz")[::2] == (200, "ready\n")

    switched.down = True
    assert isinstance(handler.handle(Delivery(body=body)), Retry)
    status, _, why = get(server, "/readyz")
    assert (status, why.split(":")[0]) == (503, "ledger unavailable")
    assert 's3_events_downstream_errors_total{system="ledger"} 1.0' in get(server, "/metrics")[2]
    assert get(server, "/healthz")[0] == 200  # alive: a restart would not bring the ledger back

    switched.down = False
    assert isinstance(handler.handle(Delivery(body=body)), Done)
    assert get(server, "/readyz")[::2] == (200, "ready\n")
    assert 's3_events_downstream_errors_total{system="ledger"} 1.0' in get(server, "/metrics")[2]


def test_openmetrics_is_served_to_a_scraper_that_asks_for_it(server: StatusServer) -> None:
    status, content_type, body = get(server, "/metrics", "application/openmetrics-text")
    assert status == 200 and content_type.startswith("application/openmetrics-text")
    assert body.endswith("# EOF\n")


# --- nobody can hold the endpoint open (contract §7) ----------------------------------------------


MakeServer = Callable[..., StatusServer]


@pytest.fixture
def make_server(registry: CollectorRegistry, health: Health) -> Iterator[MakeServer]:
    """A started StatusServer with the limits given; stopped after the test."""
    started: list[StatusServer] = []

    def make(**limits: Any) -> StatusServer:
        server = StatusServer(port=free_port(), registry=registry, health=health, **limits)
        server.start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def closed_by_the_server(client: socket.socket, within: float) -> bool:
    """Whether the server ends the connection within `within` seconds (it sends nothing)."""
    client.settimeout(within)
    try:
        return client.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_a_request_trickled_in_a_byte_at_a_time_is_closed_at_the_deadline(
    make_server: MakeServer,
) -> None:
    """The deadline is for the whole request, not for each read."""
    server = make_server(request_seconds=1.0)
    request = b"GET /healthz HTTP/1.1\r\nHost: status\r\nAccept: */*\r\n\r\n"
    with socket.create_connection((LOOPBACK, server.port), timeout=5) as client:
        started = time.monotonic()
        for byte in request[:-1]:  # 0.2 s a byte: 9 s for the request
            try:
                client.sendall(bytes([byte]))
            except OSError:
                break
            if select.select([client], [], [], 0.2)[0]:
                break
        took = time.monotonic() - started
        assert closed_by_the_server(client, within=0.5)
    assert 1.0 <= took < 2.0


def test_connections_that_send_nothing_cannot_keep_a_probe_out(
    make_server: MakeServer,
) -> None:
    """With every slot held, a new connection takes the one that waited longest."""
    server = make_server(max_connections=4, request_seconds=30.0)
    silent = [socket.create_connection((LOOPBACK, server.port), timeout=5) for _ in range(10)]
    try:
        assert get(server, "/healthz")[::2] == (200, "ok\n")
        # Four slots: the probe's, and those of the last three that connected.
        still_open = [c for c in silent if not closed_by_the_server(c, within=0.3)]
        assert still_open == silent[-3:]
    finally:
        for client in silent:
            client.close()


class HeldScrape(Collector):
    """A collector that keeps each scrape in mid-answer until `release` is set."""

    def __init__(self) -> None:
        self.in_hand = threading.Semaphore(0)
        self.release = threading.Event()

    def collect(self) -> Iterable[Metric]:
        self.in_hand.release()
        self.release.wait(timeout=10)
        return []


def test_with_every_connection_answering_a_new_one_is_closed_at_once(
    make_server: MakeServer, registry: CollectorRegistry
) -> None:
    held = HeldScrape()
    registry.register(held)
    server = make_server(max_connections=2)
    scrapes = [threading.Thread(target=get, args=(server, "/metrics")) for _ in range(2)]
    for scrape in scrapes:
        scrape.start()
    try:
        assert held.in_hand.acquire(timeout=5) and held.in_hand.acquire(timeout=5)
        with socket.create_connection((LOOPBACK, server.port), timeout=5) as late:
            late.sendall(b"GET /healthz HTTP/1.1\r\n\r\n")
            assert closed_by_the_server(late, within=1.0)
    finally:
        held.release.set()
        for scrape in scrapes:
            scrape.join(timeout=10)

"""Downstream faults against the consumer process: MediaHaven, the PID service, the
Organisations API and the FTP server misbehave for real on loopback; every event still
ends exactly once, or in the dead-letter queue with its reason (contract §4, §6).

The consumer runs with retry delays of 1 s and 2 s and, unless a test says otherwise,
three attempts.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from s3_events_handler.adapters.mediahaven import MediaHavenRecords
from s3_events_handler.adapters.organisations import OrganisationsApi
from s3_events_handler.adapters.pid import PidWebService
from s3_events_handler.domain.errors import ServiceUnavailable
from s3_events_handler.domain.model import Query, Term
from tests.e2e.service import default_concurrency, running
from tests.faults.downstream_harness import (
    Event,
    FaultyService,
    amqp_connections_of,
    essence_events,
    golden_event,
)
from tests.support import amqp
from tests.support.http_stubs import Canned
from tests.support.mediahaven_server import FakeMediaHaven, Fault
from tests.support.relay import Relay

GOLDEN_PID = "k98z0d4w1q"
RECORDS = "/mediahaven-rest-api/v2/records"
MAX_ATTEMPTS = 3


@pytest.fixture
def service(tmp_path: Path, broker: tuple[str, int]) -> Iterator[FaultyService]:
    yield from running(FaultyService(workdir=tmp_path, broker=broker))


def start_for_the_golden_event(service: FaultyService, examples: Path, **env: str) -> Event:
    """Start the consumer (with `env`), the PID service set to answer the golden PID once
    (then fresh ones); the golden event, for the test to publish."""
    service.pid_service.queue(Canned(body=[{"id": GOLDEN_PID, "number": 1}]))
    service.start_consumer(argv=None, **env)  # argv named: mypy then knows `env` holds no argv
    return golden_event(examples)


def assert_golden_outcome(service: FaultyService, examples: Path, events: list[Event]) -> None:
    """The golden event went through once: its sidecar is byte-for-byte the golden one."""
    tally = service.settle(len(events))
    service.assert_each_event_once(tally, events)
    sidecar = service.essence_folder / f"{GOLDEN_PID}.xml"
    assert sidecar.read_bytes() == (examples / "sidecar-essence.xml").read_bytes()
    assert service.pid_service.request_count == 1, "a retry minted a second PID"


# -- A. a downstream fault, then recovery: each event exactly once ---------------------------------


def test_mediahaven_503_beyond_the_in_call_retries_goes_through_the_retry_queue_once(
    service: FaultyService, examples: Path
) -> None:
    service.mediahaven.fail_next(RECORDS, *[Fault(503)] * 4)
    event = start_for_the_golden_event(service, examples)
    service.publish_events([event])

    service.wait_for_transfers(1)
    # Three tries in attempt 1 (then the retry queue), a 503 and a success in attempt 2.
    assert len(service.mediahaven.requests_to(RECORDS)) == 5
    assert service.retried_to() == [service.settings.retry_queue(1)]
    assert_golden_outcome(service, examples, [event])


def test_a_429_whose_retry_after_fits_in_a_call_is_waited_out_within_the_attempt(
    service: FaultyService, examples: Path
) -> None:
    service.mediahaven.fail_next(RECORDS, Fault.too_many_requests(1))
    event = start_for_the_golden_event(service, examples)
    service.publish_events([event])

    service.wait_for_transfers(1)
    first, second = service.mediahaven.arrival_times(RECORDS)
    assert second - first >= 1.0, "Retry-After: 1 was not honoured"
    assert service.retried_to() == []
    assert_golden_outcome(service, examples, [event])


def test_a_429_asking_longer_than_a_call_may_wait_goes_through_the_retry_queue(
    service: FaultyService, examples: Path
) -> None:
    service.mediahaven.fail_next(RECORDS, Fault.too_many_requests(60))
    event = start_for_the_golden_event(service, examples)
    started = time.monotonic()
    service.publish_events([event])

    service.wait_for_transfers(1)
    assert time.monotonic() - started < 30, "the consumer sat out the Retry-After in the call"
    assert len(service.mediahaven.requests_to(RECORDS)) == 2
    # No sooner than asked: the first level at least 60 s long, here (1, 2) the longest.
    assert service.retried_to() == [service.settings.retry_queue(2)]
    assert any("Retry-After asks 60 s" in m for m in service.log_messages())
    assert_golden_outcome(service, examples, [event])


def test_mediahaven_not_answering_within_the_timeout_is_retried_through_the_queue(
    service: FaultyService, examples: Path
) -> None:
    # Slower than HTTP_TIMEOUT_SECONDS: had the consumer waited, it would have got an answer.
    service.mediahaven.fail_next(RECORDS, Fault.slow(8))
    event = start_for_the_golden_event(service, examples, HTTP_TIMEOUT_SECONDS="1")
    service.publish_events([event])

    service.wait_for_transfers(1)
    first, second = service.mediahaven.arrival_times(RECORDS)
    # Timeout (1 s) + retry delay (1 s), and a little for the round trip through the broker.
    assert 1.9 <= second - first < 5.0
    assert service.retried_to() == [service.settings.retry_queue(1)]
    assert_golden_outcome(service, examples, [event])


@pytest.mark.parametrize("which", ["pid", "organisations"])
def test_a_service_that_is_down_then_back_gets_the_event_through_once(
    service: FaultyService, examples: Path, which: str
) -> None:
    relay = service.pid_relay if which == "pid" else service.organisations_relay
    event = start_for_the_golden_event(service, examples, RETRY_MAX_ATTEMPTS="6")
    relay.down()
    service.publish_events([event])

    service.wait_for_outcome("retry")
    relay.up()
    service.wait_for_transfers(1)
    refused = "PID service unreachable" if which == "pid" else "Organisations API unreachable"
    assert any(refused in m for m in service.log_messages()), service.log()
    assert_golden_outcome(service, examples, [event])


def test_the_organisations_api_answering_503_then_recovering_gets_the_event_through_once(
    service: FaultyService, examples: Path
) -> None:
    service.organisations.queue(*[Canned(status=503)] * 4)
    event = start_for_the_golden_event(service, examples)
    service.publish_events([event])

    service.wait_for_transfers(1)
    assert service.organisations.request_count == 5
    assert service.retried_to() == [service.settings.retry_queue(1)]
    assert_golden_outcome(service, examples, [event])


def test_an_ftp_server_down_then_back_gets_the_golden_sidecar_with_the_first_pid(
    service: FaultyService, examples: Path
) -> None:
    event = start_for_the_golden_event(service, examples, RETRY_MAX_ATTEMPTS="6")
    service.ftp.stop()
    service.publish_events([event])

    service.wait_for_outcome("retry")
    service.ftp.start()
    service.wait_for_transfers(1)
    assert any("cannot log in to FTP server" in m for m in service.log_messages())
    assert service.ftp.logins == 1
    # The PID minted in attempt 1 travelled with the retry: pid_service saw one request.
    assert_golden_outcome(service, examples, [event])


def test_an_ftp_server_restarted_between_events_costs_one_login_per_restart(
    service: FaultyService, examples: Path
) -> None:
    events = essence_events(examples, 9, "ftp-restart")
    # One connection, so one login a restart; with several workers each connection of the
    # pool logs in again when it is next used (tests/integration/test_ftp_pool.py).
    service.start_consumer(CONCURRENCY="1")
    for batch, done in ((events[:3], 3), (events[3:6], 6), (events[6:], 9)):
        if done > 3:
            service.ftp.restart()
        service.publish_events(batch)
        service.wait_for_transfers(done)

    # Each restart cut the control connection; the next upload logged in again, in the call.
    assert service.ftp.logins == 3
    assert service.retried_to() == []
    assert sum("reconnecting once" in m for m in service.log_messages()) == 2
    tally = service.settle(len(events))
    service.assert_each_event_once(tally, events)
    assert service.pid_service.request_count == len(events)


def test_a_mediahaven_token_expiring_or_revoked_mid_run_is_renewed_in_the_call(
    service: FaultyService, examples: Path
) -> None:
    events = essence_events(examples, 3, "token")
    mh = service.mediahaven
    service.start_consumer()
    service.publish_events(events[:1])
    service.wait_for_transfers(1)
    assert (mh.token_requests, mh.refresh_requests) == (1, 0)

    mh.expire_tokens()
    service.publish_events(events[1:2])
    service.wait_for_transfers(2)
    assert (mh.token_requests, mh.refresh_requests) == (2, 1)  # refreshed

    mh.revoke_tokens()
    service.publish_events(events[2:])
    service.wait_for_transfers(3)
    # The refresh token was revoked too: the refresh is refused, a password grant follows.
    assert (mh.token_requests, mh.refresh_requests) == (4, 2)
    assert len(mh.issued_tokens) == 3
    assert service.retried_to() == []
    tally = service.settle(len(events))
    service.assert_each_event_once(tally, events)


@dataclass(frozen=True)
class EndlessFault:
    """A fault that never ends, where it hits, and what the dead letter says about it."""

    arrange: Callable[[FaultyService], None]
    stage: str
    reason: str
    http_timeout: str = "5"


def _stop_ftp(service: FaultyService) -> None:
    service.ftp.stop()


ENDLESS_FAULTS = {
    "mediahaven-503": EndlessFault(
        lambda s: s.mediahaven.fail_next(RECORDS, *[Fault(503)] * 20),
        "archived-check",
        "answered 503",
    ),
    "mediahaven-silent": EndlessFault(
        lambda s: s.mediahaven.fail_next(RECORDS, *[Fault.slow(8)] * 5),
        "archived-check",
        "did not answer search within 1 s",
        http_timeout="1",
    ),
    "pid-service-down": EndlessFault(
        lambda s: s.pid_relay.down(), "pid", "PID service unreachable"
    ),
    "organisations-503": EndlessFault(
        lambda s: s.organisations.queue(*[Canned(status=503)] * 20),
        "organisations",
        "Organisations API answered 503",
    ),
    "ftp-down": EndlessFault(_stop_ftp, "sidecar-upload", "cannot log in to FTP server"),
}


@pytest.mark.parametrize("fault", ENDLESS_FAULTS.values(), ids=ENDLESS_FAULTS.keys())
def test_an_event_whose_fault_never_ends_is_dead_lettered_after_the_last_attempt(
    service: FaultyService, examples: Path, fault: EndlessFault
) -> None:
    service.start_consumer(HTTP_TIMEOUT_SECONDS=fault.http_timeout)
    fault.arrange(service)
    [event] = essence_events(examples, 1, "endless")
    service.publish_events([event])

    service.wait_for_outcome("dead-letter", timeout=30)
    s = service.settings
    assert service.retried_to() == [s.retry_queue(1), s.retry_queue(2)]
    tally = service.settle(1)
    assert (tally.processed, tally.dead_lettered, tally.waiting, tally.lost) == (0, 1, 0, 0)
    [dead] = tally.dead
    assert dead.body == event.body
    assert dead.headers["x-attempt"] == MAX_ATTEMPTS
    assert dead.headers["x-error-stage"] == fault.stage
    assert dead.headers["x-error"].startswith(f"gave up after {MAX_ATTEMPTS} attempts: ")
    assert fault.reason in dead.headers["x-error"]
    assert [name for name in service.sidecars() if not name.startswith(".")] == []
    if fault.stage == "sidecar-upload":
        # One PID for all three attempts; it travels with the message.
        assert service.pid_service.request_count == 1
        assert dead.headers["x-pid"] == service.pid_service.minted[0]


# -- B. every edge fails safe ---------------------------------------------------------------------


def test_a_transfer_request_that_reaches_no_queue_is_retried_not_acked_as_done(
    service: FaultyService, examples: Path
) -> None:
    s = service.settings
    event = start_for_the_golden_event(service, examples, RETRY_MAX_ATTEMPTS="6")
    with amqp.channel(s.host, s.port) as ch:
        ch.queue_unbind(
            queue=s.transfer_queue, exchange=s.transfer_exchange, routing_key=s.transfer_queue
        )
    service.publish_events([event])

    # Whatever the first outcome is, it must not be "done".
    assert service.wait_for(lambda: bool(service.outcomes()), timeout=20), service.log()
    assert service.outcomes() == {"retry": 1}, service.log()
    assert any("transfer request reached no queue" in m for m in service.log_messages())
    with amqp.channel(s.host, s.port) as ch:
        ch.queue_bind(
            queue=s.transfer_queue, exchange=s.transfer_exchange, routing_key=s.transfer_queue
        )
    service.wait_for_outcome("done")
    assert service.outcomes()["done"] == 1
    assert_golden_outcome(service, examples, [event])


def test_an_upload_cut_off_half_way_leaves_no_final_file_and_the_retry_writes_the_golden_sidecar(
    service: FaultyService, examples: Path
) -> None:
    golden = (examples / "sidecar-essence.xml").read_bytes()
    final = f"/VRT/TAPE-SHARE-EVENTS/{GOLDEN_PID}.xml"
    service.cutting_ftp.cut_next(1)
    event = start_for_the_golden_event(service, examples)
    service.publish_events([event])

    service.wait_for_transfers(1)
    [cut] = service.cutting_ftp.cuts
    assert re.fullmatch(rf"/VRT/TAPE-SHARE-EVENTS/\.{GOLDEN_PID}\.xml\.[0-9a-f]+\.part", cut.path)
    assert 0 < cut.kept < len(golden)
    print(f"\nupload cut after {cut.kept} of {len(golden)} bytes ({cut.received} received)")
    # The final name only ever received whole sidecars: the cut one was never renamed.
    assert service.cutting_ftp.finals == [(final, golden)]
    # The retry wrote under a name of its own; the cut upload removed what it left.
    first, retried = service.ftp.stored
    assert first == cut.path != retried
    assert service.sidecars() == [f"{GOLDEN_PID}.xml"]
    assert service.retried_to() == [service.settings.retry_queue(1)]
    assert service.ftp.logins == 2
    assert_golden_outcome(service, examples, [event])


def test_a_thousand_events_cost_a_handful_of_ftp_logins_and_amqp_connections(
    service: FaultyService, examples: Path
) -> None:
    events = essence_events(examples, 1000, "volume")
    service.publish_events(events)
    started = time.monotonic()
    service.start_consumer()
    service.wait_for_transfers(len(events), timeout=180)
    wall = time.monotonic() - started

    assert service.process is not None
    held, listed = amqp_connections_of(service.process.pid, service.settings.port)
    opened = sum(m.startswith("connected to the broker") for m in service.log_messages())
    logins = service.ftp.logins
    tally = service.settle(len(events))
    print(
        f"\n{tally.figures()} ftp-logins={logins} amqp-connections-opened={opened} "
        f"amqp-connections-held={held} (broker lists {listed}) wall={wall:.1f}s "
        f"rate={len(events) / wall:.1f} events/s"
    )
    service.assert_each_event_once(tally, events)
    assert service.pid_service.request_count == len(events)
    assert logins <= default_concurrency()  # at most a connection per worker, kept
    assert opened <= 3
    assert held == listed == 1


# -- B4. a server that accepts and never answers costs at most timeout + 1 s per call -------------

TIMEOUT = 1.0


def _records(base_url: str) -> MediaHavenRecords:
    mh = FakeMediaHaven()
    return MediaHavenRecords(
        session=requests.Session(),
        base_url=base_url,
        client_id=mh.client_id,
        client_secret=mh.client_secret,
        username=mh.username,
        password=mh.password,
        timeout=TIMEOUT,
    )


QUERY = Query.any_of(Term("s3_object_key", "some-key.MXF"))

SILENT_CALLS: dict[str, Callable[[str], object]] = {
    "pid-service": lambda url: PidWebService(
        session=requests.Session(), url=url, timeout=TIMEOUT
    ).mint(),
    "organisations-api": lambda url: OrganisationsApi(
        session=requests.Session(), url=url, timeout=TIMEOUT
    ).cp_name("OR-rf5kf25"),
    "mediahaven-token": lambda url: list(_records(url).search(QUERY)),
}


@pytest.mark.parametrize("call", SILENT_CALLS.values(), ids=SILENT_CALLS.keys())
def test_a_server_that_accepts_and_never_answers_costs_at_most_timeout_plus_1s(
    call: Callable[[str], object],
) -> None:
    with Relay() as silent:
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable):
            call(silent.url())
        elapsed = time.monotonic() - started
    print(f"\nsilent server: gave up after {elapsed:.2f} s (timeout {TIMEOUT:g} s)")
    assert silent.accepted >= 1
    assert TIMEOUT * 0.9 <= elapsed <= TIMEOUT + 1


MEDIAHAVEN_CALLS: dict[str, Callable[[MediaHavenRecords], object]] = {
    "search": lambda records: list(records.search(QUERY)),
    "delete": lambda records: records.delete("fragment-1", reason="test"),
    "update": lambda records: records.add_relation("fragment-1", GOLDEN_PID, reason="test"),
}


@pytest.mark.parametrize("call", MEDIAHAVEN_CALLS.values(), ids=MEDIAHAVEN_CALLS.keys())
def test_mediahaven_falling_silent_with_a_valid_token_costs_at_most_timeout_plus_1s(
    call: Callable[[MediaHavenRecords], object],
) -> None:
    with FakeMediaHaven() as mh, Relay(int(mh.base_url.rsplit(":", 1)[1])) as relay:
        mh.add_record("fragment-1", pid=GOLDEN_PID)
        records = _records(relay.url("").rstrip("/"))
        list(records.search(QUERY))  # a token, and a kept-alive connection through the relay
        relay.swallowing = True
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable):
            call(records)
        elapsed = time.monotonic() - started
    print(f"\nMediaHaven fell silent: gave up after {elapsed:.2f} s (timeout {TIMEOUT:g} s)")
    assert TIMEOUT * 0.9 <= elapsed <= TIMEOUT + 1
    assert mh.token_requests == 1

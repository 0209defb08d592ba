"""What the application tells telemetry: each outcome's facts and report, the handler's
in-progress calls, the failures it counts by system, the ledger's answers and hits
(contract §7)."""

from __future__ import annotations

import json
from pathlib import Path

import pika
import pytest

from s3_events_handler.adapters.rabbitmq.headers import delivery_of
from s3_events_handler.application.handler import MessageHandler
from s3_events_handler.application.messages import (
    DeadLetter,
    Delivery,
    Done,
    EventFacts,
    Outcome,
    Retry,
    Split,
)
from s3_events_handler.application.retries import RetrySchedule
from s3_events_handler.application.telemetry import EventOutcome, EventReport
from s3_events_handler.domain.errors import BadInput, Rejected, ServiceUnavailable, System
from s3_events_handler.domain.results import AlreadyArchived, AlreadyHandled
from s3_events_handler.domain.use_cases import IngestEssence
from tests.unit.builders import Failing, World, essence_record, golden_event, record_of
from tests.unit.recording_telemetry import RecordingTelemetry

ESSENCE = "event-essence-created.json"
REMOVED = "event-removed.json"
BUCKET = "mam-highresvideo"
KEY = "20261120-journaal-1900-a7f3c2d1-55e4-4b2a-9c1d-0e8f7a6b5c4d.MXF"
# The golden events' eventTime, 2026-11-20T09:14:03.512Z, in Unix seconds.
GOLDEN_EVENT_TIME = 1795166043.512


def handled(
    world: World,
    message: object,
    telemetry: RecordingTelemetry | None = None,
    ingest: IngestEssence | None = None,
    **headers: object,
) -> Outcome:
    handler = MessageHandler(
        ingest=ingest or world.ingest,
        remove=world.remove,
        retries=RetrySchedule(max_attempts=3),
        telemetry=telemetry,
    )
    body = message if isinstance(message, bytes) else json.dumps(message).encode()
    return handler.handle(delivery_of(body, pika.BasicProperties(headers=headers)))


# --- the facts each outcome carries ------------------------------------------------------


def test_an_archived_essence_is_done_with_its_pid_at_stage_done(examples: Path) -> None:
    outcome = handled(World(), golden_event(examples, ESSENCE))
    assert isinstance(outcome, Done)
    assert outcome.facts == EventFacts(
        "created", BUCKET, KEY, "k98z0d4w1q", "done", 1, event_time=GOLDEN_EVENT_TIME
    )


def test_an_object_archived_before_is_skipped(examples: Path) -> None:
    world = World(records=[essence_record("f-1", key=KEY, bucket=BUCKET)])
    outcome = handled(world, golden_event(examples, ESSENCE))
    assert isinstance(outcome, Done) and isinstance(outcome.result, AlreadyArchived)
    report = EventReport.of(outcome, correlation_id="c", seconds=0.5)
    assert report.outcome is EventOutcome.SKIPPED
    assert report.facts.stage == "archived-check"


def test_a_removal_with_nothing_to_remove_is_a_skipped_removal(examples: Path) -> None:
    outcome = handled(World(), golden_event(examples, REMOVED))
    report = EventReport.of(outcome, correlation_id="c", seconds=0.5)
    assert (report.outcome, report.facts.kind) == (EventOutcome.SKIPPED, "removed")


def test_a_body_that_is_not_json_counts_as_created_and_knows_no_object() -> None:
    outcome = handled(World(), b"not an S3 event")
    assert isinstance(outcome, DeadLetter)
    assert outcome.facts == EventFacts("created", None, None, None, "parse", 1)


def test_bad_input_reports_the_kind_bucket_and_key_the_record_claims(examples: Path) -> None:
    message = golden_event(examples, REMOVED)
    message["Records"] = [record_of(message, s3__bucket__metadata__tenant="not-an-or-id")]
    outcome = handled(World(), message)
    assert isinstance(outcome, DeadLetter)
    assert (outcome.facts.kind, outcome.facts.bucket, outcome.facts.key) == (
        "removed",
        BUCKET,
        KEY,
    )


def test_a_retry_reports_its_attempt_stage_and_the_pid_it_carries(examples: Path) -> None:
    world = World()
    ingest = IngestEssence(
        records=world.records,
        pids=world.pids,
        organisations=world.organisations,
        transport=Failing(ServiceUnavailable("FTP is down")),
        transfers=world.transfers,
        destinations=world.destinations,
        ledger=world.ledger,
    )
    message = golden_event(examples, ESSENCE)
    outcome = handled(world, message, None, ingest, **{"x-attempt": 2})
    assert isinstance(outcome, Retry)
    assert outcome.facts == EventFacts(
        "created", BUCKET, KEY, "k98z0d4w1q", "sidecar-upload", 2, event_time=GOLDEN_EVENT_TIME
    )
    report = EventReport.of(outcome, correlation_id=outcome.correlation_id, seconds=1.25)
    assert report.log_fields() == {
        "correlation_id": "7c1f0a9e2b3d4c5e6f708192a3b4c5d6",
        "kind": "created",
        "bucket": BUCKET,
        "key": KEY,
        "pid": "k98z0d4w1q",
        "outcome": "retried",
        "stage": "sidecar-upload",
        "attempt": 2,
        "duration_ms": 1250.0,
        "reason": "ServiceUnavailable: FTP is down",
    }


def test_a_split_counts_under_its_first_records_kind_and_names_no_object(
    examples: Path,
) -> None:
    removed = golden_event(examples, REMOVED)["Records"][0]
    created = golden_event(examples, ESSENCE)["Records"][0]
    outcome = handled(World(), {"Records": [removed, created]})
    assert isinstance(outcome, Split)
    assert outcome.facts == EventFacts("removed", None, None, None, "parse", 1)
    report = EventReport.of(outcome, correlation_id=None, seconds=0.0)
    assert report.outcome is EventOutcome.SPLIT
    assert "pid" not in report.log_fields()
    assert report.log_fields()["correlation_id"] is None


def test_the_handler_reports_each_message_taken_up_and_through(examples: Path) -> None:
    telemetry = RecordingTelemetry()
    handled(World(), golden_event(examples, ESSENCE), telemetry)
    handled(World(), b"not JSON", telemetry)
    assert telemetry.calls == ["event_started", "event_handled"] * 2


# --- failures, counted where the handler decides the outcome -------------------------------


def ingest_failing(world: World, port: str, error: Exception) -> IngestEssence:
    """The world's IngestEssence with `port` failing with `error`."""
    ports: dict[str, object] = {
        "records": world.records,
        "pids": world.pids,
        "organisations": world.organisations,
        "transport": world.transport,
        "transfers": world.transfers,
        "ledger": world.ledger,
    }
    ports[port] = Failing(error)
    return IngestEssence(destinations=world.destinations, **ports)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("port", "error"),
    [
        ("records", ServiceUnavailable("down", system=System.MEDIAHAVEN)),
        ("records", Rejected("refused", system=System.MEDIAHAVEN)),
        ("pids", ServiceUnavailable("down", system=System.PID)),
        ("organisations", Rejected("no MAM label", system=System.ORGANISATIONS)),
        ("transport", ServiceUnavailable("down", system=System.FTP)),
        ("transfers", ServiceUnavailable("down", system=System.BROKER)),
        ("ledger", ServiceUnavailable("down", system=System.LEDGER)),
    ],
)
def test_a_systems_failure_or_refusal_is_counted_once_under_its_name(
    examples: Path, port: str, error: ServiceUnavailable | Rejected
) -> None:
    telemetry, world = RecordingTelemetry(), World()
    ingest = ingest_failing(world, port, error)
    outcome = handled(world, golden_event(examples, ESSENCE), telemetry, ingest)
    assert isinstance(outcome, (Retry, DeadLetter))
    assert telemetry.calls == ["event_started", f"downstream_error:{error.system}", "event_handled"]


def test_bad_input_found_by_an_adapter_is_not_the_systems_error(examples: Path) -> None:
    telemetry, world = RecordingTelemetry(), World()
    ingest = ingest_failing(world, "pids", BadInput("not a PID"))
    outcome = handled(world, golden_event(examples, ESSENCE), telemetry, ingest)
    assert isinstance(outcome, DeadLetter)
    assert telemetry.calls == ["event_started", "event_handled"]


def test_the_ledger_reports_each_answer_and_counts_a_claim_that_finds_the_event(
    examples: Path,
) -> None:
    """Each answer to the crash count, so that readiness comes back with the ledger; a hit
    for each claim that finds the event taken in before (here a duplicate)."""
    telemetry, world = RecordingTelemetry(), World()
    handler = MessageHandler(
        ingest=world.ingest_on(world.records, on_recall=telemetry.ledger_hit),
        remove=world.remove,
        retries=RetrySchedule(),
        unfinished=world.ledger,
        telemetry=telemetry,
    )
    body = json.dumps(golden_event(examples, ESSENCE)).encode()
    assert isinstance(handler.handle(Delivery(body=body)), Done)
    answered = ["event_started", "ledger_answered", "ledger_answered", "event_handled"]
    assert telemetry.calls == answered
    outcome = handler.handle(Delivery(body=body))
    assert isinstance(outcome, Done) and isinstance(outcome.result, AlreadyHandled)
    hit = ["event_started", "ledger_answered", "ledger_hit", "ledger_answered", "event_handled"]
    assert telemetry.calls == answered + hit

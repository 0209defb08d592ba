"""What the application tells telemetry: each outcome's facts and report, the handler's
in-progress calls, and the wrapped ports' downstream errors and ledger hits (contract §7)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pika
import pytest

from s3_events_handler.adapters.rabbitmq.headers import delivery_of
from s3_events_handler.application.handler import MessageHandler
from s3_events_handler.application.messages import (
    DeadLetter,
    Done,
    EventFacts,
    Outcome,
    Retry,
    Split,
)
from s3_events_handler.application.observed import (
    ObservedLedger,
    ObservedOrganisations,
    ObservedPids,
    ObservedRecords,
    ObservedTransfers,
    ObservedTransport,
)
from s3_events_handler.application.retries import RetrySchedule
from s3_events_handler.application.telemetry import EventOutcome, EventReport
from s3_events_handler.domain.errors import BadInput, Rejected, ServiceUnavailable
from s3_events_handler.domain.model import (
    Query,
    S3Object,
    Sidecar,
    Step,
    Term,
    TransferRequest,
)
from s3_events_handler.domain.results import AlreadyArchived
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


# --- the ports, wrapped --------------------------------------------------------------------


def test_each_wrapped_port_names_its_system_when_it_fails_or_refuses() -> None:
    telemetry = RecordingTelemetry()
    down, refusing = Failing(ServiceUnavailable("down")), Failing(Rejected("refused"))
    obj = S3Object(domain="s3", bucket=BUCKET, key=KEY, owner="owner")
    sidecar = Sidecar("k98z0d4w1q", "VRT", "DISK", "OR-x", "k98z0d4w1q", obj, "archive_master")
    request = TransferRequest(obj, "/path", "ftp://host", "k98z0d4w1q", "c-1")
    calls: list[Callable[[], object]] = [
        lambda: list(ObservedRecords(down, telemetry).search(Query.any_of(Term("a", "b")))),
        lambda: ObservedRecords(refusing, telemetry).delete("f-1", "gone"),
        lambda: ObservedPids(down, telemetry).mint(),
        lambda: ObservedOrganisations(refusing, telemetry).cp_name("OR-x"),
        lambda: ObservedTransport(down, telemetry).upload(sidecar),
        lambda: ObservedTransfers(down, telemetry).publish(request),
        lambda: ObservedLedger(down, telemetry).recall("event-1"),
        lambda: ObservedLedger(down, telemetry).claim_pid("event-1", "k98z0d4w1q"),
        lambda: ObservedLedger(down, telemetry).advance("event-1", Step.TRANSFER_REQUESTED),
    ]
    for call in calls:
        with pytest.raises((ServiceUnavailable, Rejected)):
            call()
    assert telemetry.calls == [
        "downstream_error:mediahaven",
        "downstream_error:mediahaven",
        "downstream_error:pid",
        "downstream_error:organisations",
        "downstream_error:ftp",
        "downstream_error:broker",
        *["downstream_error:ledger"] * 3,
    ]


def test_bad_input_found_by_an_adapter_is_not_the_systems_error() -> None:
    telemetry = RecordingTelemetry()
    with pytest.raises(BadInput):
        ObservedPids(Failing(BadInput("not a PID")), telemetry).mint()
    assert telemetry.calls == []


def test_a_wrapped_port_answers_as_the_port_does() -> None:
    world, telemetry = World(records=[essence_record("f-1", key="k")]), RecordingTelemetry()
    records = ObservedRecords(world.records, telemetry)
    assert [r.fragment_id for r in records.search(Query.any_of(Term("s3_object_key", "k")))] == [
        "f-1"
    ]
    records.delete("f-1", reason="gone")
    assert ObservedPids(world.pids, telemetry).mint() == "k98z0d4w1q"
    assert world.records.deleted == ["f-1"]
    assert telemetry.calls == []


def test_the_ledger_reports_each_answer_and_counts_a_claim_that_finds_the_event() -> None:
    """Each answer, so that readiness comes back with the ledger; a hit after its answer."""
    telemetry = RecordingTelemetry()
    ledger = ObservedLedger(World().ledger, telemetry)
    assert ledger.claim("event-1") is None
    assert ledger.claim_pid("event-1", "k98z0d4w1q") == "k98z0d4w1q"
    ledger.release("event-1", Step.SIDECAR_UPLOADED)
    assert telemetry.calls == ["ledger_answered"] * 3
    entry = ledger.claim("event-1")
    assert entry is not None and entry.step is Step.SIDECAR_UPLOADED
    assert telemetry.calls == ["ledger_answered"] * 4 + ["ledger_hit"]

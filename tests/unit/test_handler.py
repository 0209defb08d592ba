"""The application layer: one delivery -> one outcome (contract §2 and §6)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pika
import pytest

from s3_events_handler.adapters.rabbitmq.headers import delivery_of, headers_for
from s3_events_handler.application.handler import MessageHandler
from s3_events_handler.application.messages import DeadLetter, Delivery, Done, Retry, Split
from s3_events_handler.application.retries import RetrySchedule, retry_instead, transient_outcome
from s3_events_handler.domain.errors import ServiceUnavailable, at_stage
from s3_events_handler.domain.model import S3Event, Stage
from s3_events_handler.domain.results import Removed, Result, Sent
from tests.unit.builders import World, essence_record, event_of, golden_event

ESSENCE = "event-essence-created.json"
KEY = "20261120-journaal-1900-a7f3c2d1-55e4-4b2a-9c1d-0e8f7a6b5c4d.MXF"


def handler_for(world: World, policy: RetrySchedule | None = None) -> MessageHandler:
    return MessageHandler(
        ingest=world.ingest, remove=world.remove, retries=policy or RetrySchedule()
    )


def delivery(message: object, **kwargs: Any) -> Delivery:
    return received(json.dumps(message).encode(), **kwargs)


def received(
    body: bytes, headers: dict[str, Any] | None = None, correlation_id: str | None = None
) -> Delivery:
    """What the consumer hands the handler of a message with these headers."""
    return delivery_of(body, pika.BasicProperties(headers=headers, correlation_id=correlation_id))


def copied(outcome: Retry | DeadLetter, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """The headers the copy the broker gets of `outcome` carries (`headers`: the delivery's)."""
    return headers_for(outcome, headers or {})


class FailingUseCase:
    """Fails at a chosen stage, after 'minting' a PID, as a downstream outage would."""

    def __init__(self, error: Exception, pid: str | None = "a1b2c3d4e5") -> None:
        self.error = error
        self.pid = pid

    def execute(self, event: S3Event, *, correlation_id: str, pid: str | None) -> Result:
        with at_stage(Stage.SIDECAR_UPLOAD, pid=pid or self.pid):
            raise self.error


def failing_handler(error: Exception, policy: RetrySchedule | None = None) -> MessageHandler:
    world = World()
    return MessageHandler(
        ingest=FailingUseCase(error), remove=world.remove, retries=policy or RetrySchedule()
    )


def test_a_good_essence_event_is_done(examples: Path) -> None:
    world = World()
    outcome = handler_for(world).handle(delivery(golden_event(examples, ESSENCE)))
    assert isinstance(outcome, Done)
    assert outcome.result == Sent(
        key=KEY,
        cp_name="VRT",
        folder="TAPE-SHARE-EVENTS",
        sidecar_file="k98z0d4w1q.xml",
        pid="k98z0d4w1q",
    )
    assert len(world.transfers.published) == 1


def test_done_is_logged_at_debug_in_the_words_operators_know(
    examples: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """At DEBUG: the consumer's one INFO line a message tells the outcome (contract §7)."""
    caplog.set_level("DEBUG", logger="s3_events_handler.application.handler")
    outcome = handler_for(World()).handle(delivery(golden_event(examples, ESSENCE)))
    assert isinstance(outcome, Done)
    line = f"sent VRT/TAPE-SHARE-EVENTS/k98z0d4w1q.xml for {KEY}"
    assert outcome.summary == line
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [("DEBUG", f"done: {line}")]


def test_the_gateway_request_id_becomes_the_correlation_id(examples: Path) -> None:
    world = World()
    handler_for(world).handle(delivery(golden_event(examples, ESSENCE)))
    assert world.transfers.published[0].correlation_id == "7c1f0a9e2b3d4c5e6f708192a3b4c5d6"


def test_an_incoming_correlation_id_is_carried_on(examples: Path) -> None:
    world = World()
    handler_for(world).handle(
        delivery(golden_event(examples, ESSENCE), correlation_id="from-upstream")
    )
    assert world.transfers.published[0].correlation_id == "from-upstream"


def test_without_any_id_a_new_correlation_id_is_made(examples: Path) -> None:
    message = golden_event(examples, ESSENCE)
    del message["Records"][0]["responseElements"]
    world = World()
    handler_for(world).handle(delivery(message))
    assert len(world.transfers.published[0].correlation_id) == 36


@pytest.mark.parametrize(
    "body",
    [b"not json", b"\xff\xfe", b"[1, 2]", b'"text"', b"{}", b'{"Records": []}', b'{"Records": 3}'],
)
def test_a_body_that_is_no_s3_notification_is_dead_lettered(body: bytes) -> None:
    outcome = handler_for(World()).handle(Delivery(body=body))
    assert isinstance(outcome, DeadLetter)
    assert outcome.stage == "parse"
    assert copied(outcome)["x-error-stage"] == "parse"
    assert type(copied(outcome)["x-error-stage"]) is str  # the text, not the enum
    assert "\n" not in copied(outcome)["x-error"]


def test_an_unknown_event_type_is_dead_lettered_with_its_reason(examples: Path) -> None:
    message = golden_event(examples, ESSENCE)
    message["Records"][0]["eventName"] = "ObjectAccessed:Get"
    outcome = handler_for(World()).handle(delivery(message, headers={"keep": "me"}))
    assert isinstance(outcome, DeadLetter)
    assert "unknown event type" in outcome.reason
    assert copied(outcome, {"keep": "me"})["keep"] == "me"


def test_a_dead_letter_says_when_it_was_dead_lettered() -> None:
    moment = datetime(2024, 5, 1, 12, 30, 5, 123456, tzinfo=UTC)
    world = World()
    handler = MessageHandler(
        ingest=world.ingest, remove=world.remove, retries=RetrySchedule(), clock=lambda: moment
    )
    headers = {"x-dead-lettered-at": "old"}
    outcome = handler.handle(received(b"not json", headers))
    assert isinstance(outcome, DeadLetter)
    assert copied(outcome, headers)["x-dead-lettered-at"] == "2024-05-01T12:30:05+00:00"


def test_an_organisation_without_label_is_dead_lettered_at_that_stage(examples: Path) -> None:
    message = golden_event(examples, ESSENCE)
    message["Records"][0]["s3"]["bucket"]["metadata"]["tenant"] = "OR-0000000"
    outcome = handler_for(World()).handle(delivery(message))
    assert isinstance(outcome, DeadLetter)
    assert outcome.stage == "organisations"


def test_several_records_are_split_one_per_message(examples: Path) -> None:
    first = golden_event(examples, ESSENCE)["Records"][0]
    second = golden_event(examples, "event-removed.json")["Records"][0]
    world = World()
    outcome = handler_for(world).handle(delivery({"Records": [first, second]}))
    assert isinstance(outcome, Split)
    assert [json.loads(body) for body in outcome.bodies] == [
        {"Records": [first]},
        {"Records": [second]},
    ]
    assert world.transfers.published == []


def test_a_transient_failure_is_retried_at_its_backoff_level(examples: Path) -> None:
    handler = failing_handler(ServiceUnavailable("MediaHaven answered 503"))
    outcome = handler.handle(delivery(golden_event(examples, ESSENCE)))
    assert isinstance(outcome, Retry)
    assert outcome.delay_seconds == 10
    assert copied(outcome)["x-attempt"] == 2
    assert copied(outcome)["x-pid"] == "a1b2c3d4e5"


def test_later_attempts_back_off_further_and_stay_on_the_last_level(examples: Path) -> None:
    handler = failing_handler(ServiceUnavailable("down"), RetrySchedule(max_attempts=99))
    message = golden_event(examples, ESSENCE)
    delays = []
    for attempt in (2, 3, 4, 5, 6, 7):
        outcome = handler.handle(delivery(message, headers={"x-attempt": attempt}))
        assert isinstance(outcome, Retry)
        delays.append(outcome.delay_seconds)
    assert delays == [30, 90, 270, 810, 810, 810]


def test_the_last_attempt_goes_to_the_dead_letter_queue(examples: Path) -> None:
    handler = failing_handler(ServiceUnavailable("still down"))
    outcome = handler.handle(delivery(golden_event(examples, ESSENCE), headers={"x-attempt": 8}))
    assert isinstance(outcome, DeadLetter)
    assert outcome.reason.startswith("gave up after 8 attempts")
    assert outcome.stage == "sidecar-upload"


def test_a_retry_reuses_the_pid_it_carries(examples: Path) -> None:
    world = World()
    outcome = handler_for(world).handle(
        delivery(golden_event(examples, ESSENCE), headers={"x-pid": "z9y8x7w6v5", "x-attempt": 2})
    )
    assert isinstance(outcome, Done)
    assert world.pids.minted == []
    assert world.transfers.published[0].message_id == "z9y8x7w6v5"


def test_a_forged_pid_header_is_ignored(examples: Path) -> None:
    world = World()
    handler_for(world).handle(
        delivery(golden_event(examples, ESSENCE), headers={"x-pid": "../../etc/x"})
    )
    assert world.pids.minted == ["k98z0d4w1q"]


def test_an_unforeseen_exception_is_retried_not_raised(examples: Path) -> None:
    handler = failing_handler(KeyError("surprise"))
    outcome = handler.handle(delivery(golden_event(examples, ESSENCE)))
    assert isinstance(outcome, Retry)
    assert "KeyError" in outcome.reason


def test_a_collateral_before_its_essence_waits_for_a_retry(examples: Path) -> None:
    world = World()
    outcome = handler_for(world).handle(
        delivery(golden_event(examples, "event-collateral-created.json"))
    )
    assert isinstance(outcome, Retry)
    assert "no archived essence" in outcome.reason


def test_a_removal_is_done(examples: Path) -> None:
    world = World([essence_record("essence-1", key=KEY)])
    outcome = handler_for(world).handle(delivery(golden_event(examples, "event-removed.json")))
    assert isinstance(outcome, Done)
    assert outcome.result == Removed(bucket="mam-highresvideo", key=KEY, essences=1, collaterals=0)
    assert world.records.deleted == ["essence-1"]


@pytest.mark.parametrize("attempt", ["x", None, -3, 0])
def test_a_garbled_attempt_header_counts_as_the_first(examples: Path, attempt: object) -> None:
    handler = failing_handler(ServiceUnavailable("down"))
    outcome = handler.handle(
        delivery(golden_event(examples, ESSENCE), headers={"x-attempt": attempt})
    )
    assert isinstance(outcome, Retry)
    assert copied(outcome, {"x-attempt": attempt})["x-attempt"] == 2


def test_a_service_that_asks_to_wait_longer_is_retried_no_sooner(examples: Path) -> None:
    handler = failing_handler(ServiceUnavailable("429 from MediaHaven", retry_after=100.5))
    outcome = handler.handle(delivery(golden_event(examples, ESSENCE)))
    assert isinstance(outcome, Retry)
    assert outcome.delay_seconds == 101  # not the first level's 10 s


def test_a_dead_letter_after_a_pid_was_minted_carries_it(examples: Path) -> None:
    """A replay of the dead letter then reuses the PID, even when the ledger forgot it."""
    world = World()
    world.transport.folders = set()  # the folder is missing: permanent, after the PID
    outcome = handler_for(world).handle(delivery(golden_event(examples, ESSENCE)))
    assert isinstance(outcome, DeadLetter)
    assert outcome.stage == "sidecar-upload"
    assert copied(outcome)["x-pid"] == world.pids.minted[0] == "k98z0d4w1q"


def test_a_dead_letter_before_any_pid_carries_none(examples: Path) -> None:
    message = golden_event(examples, ESSENCE)
    message["Records"][0]["eventName"] = "ObjectRestore:Post"
    outcome = handler_for(World()).handle(delivery(message))
    assert isinstance(outcome, DeadLetter)
    assert "x-pid" not in copied(outcome)


@pytest.mark.parametrize("attempt", [None, 3])
def test_an_event_another_consumer_holds_comes_back_soon_its_attempt_not_counted(
    examples: Path, attempt: int | None
) -> None:
    world = World()
    message = golden_event(examples, ESSENCE)
    identity = event_of(message).identity
    world.ledger.beside("another consumer").claim(identity)
    headers = {} if attempt is None else {"x-attempt": attempt}

    outcome = handler_for(world, RetrySchedule(delays=(7, 30))).handle(
        delivery(message, headers=headers)
    )

    assert isinstance(outcome, Retry)
    assert outcome.delay_seconds == 7
    assert copied(outcome, headers) == headers  # the attempt count as it was
    assert outcome.reason.startswith("ClaimedElsewhere: ")
    assert world.pids.minted == [] and world.transfers.published == []


# -- what the consumer asks when handling or settling went wrong in a way nobody foresaw ----


def test_an_exception_that_escaped_the_handler_is_retried_at_the_backoff_of_its_attempt() -> None:
    headers = {"x-attempt": 2, "x-pid": "a1b2c3d4e5", "origin": "gateway"}
    escaped = received(b"{}", headers, correlation_id="corr-1")
    outcome = transient_outcome(escaped, RuntimeError("a bug"), RetrySchedule(delays=(10, 30)))
    assert isinstance(outcome, Retry)
    assert outcome.delay_seconds == 30
    assert copied(outcome, headers) == {"x-attempt": 3, "x-pid": "a1b2c3d4e5", "origin": "gateway"}
    assert (outcome.reason, outcome.correlation_id) == ("RuntimeError: a bug", "corr-1")
    assert (outcome.facts.stage, outcome.facts.attempt) == ("received", 2)


def test_an_exception_that_escaped_the_handler_on_the_last_attempt_is_dead_lettered() -> None:
    moment = datetime(2024, 5, 1, 12, 30, 5, tzinfo=UTC)
    escaped = received(b"{}", {"x-attempt": 3})
    outcome = transient_outcome(
        escaped, KeyError("surprise"), RetrySchedule(max_attempts=3), clock=lambda: moment
    )
    assert isinstance(outcome, DeadLetter)
    headers = copied(outcome, {"x-attempt": 3})
    assert headers["x-error"] == "gave up after 3 attempts: KeyError: 'surprise'"
    assert headers["x-error-stage"] == "received"
    assert headers["x-dead-lettered-at"] == "2024-05-01T12:30:05+00:00"
    assert outcome.correlation_id  # one is made when the delivery has none


def test_a_dead_letter_the_broker_refused_becomes_a_retry_even_past_the_last_attempt() -> None:
    """The dead letters are what refused it: it waits in the last retry level instead."""
    headers = {"x-attempt": 8, "origin": "gateway"}
    refused_delivery = received(b"not json", headers, correlation_id="corr-9")
    policy = RetrySchedule(delays=(10, 30), max_attempts=8)
    refused = handler_for(World(), policy).handle(refused_delivery)
    assert isinstance(refused, DeadLetter)

    outcome = retry_instead(refused_delivery, refused, "NackError", policy)
    assert isinstance(outcome, Retry)
    assert outcome.delay_seconds == 30
    assert copied(outcome, headers) == {"x-attempt": 9, "origin": "gateway"}  # not given up
    assert outcome.correlation_id == refused.correlation_id == "corr-9"
    assert outcome.facts == refused.facts


def test_a_split_the_broker_refused_becomes_a_retry_keeping_the_incoming_correlation_id(
    examples: Path,
) -> None:
    message = golden_event(examples, ESSENCE)
    message["Records"].append(message["Records"][0])
    incoming = delivery(message, correlation_id="upstream-7")
    refused = handler_for(World()).handle(incoming)
    assert isinstance(refused, Split)

    outcome = retry_instead(incoming, refused, "UnroutableError", RetrySchedule())
    assert (outcome.delay_seconds, copied(outcome)["x-attempt"]) == (10, 2)
    assert outcome.correlation_id == "upstream-7"

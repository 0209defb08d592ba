"""One incoming message -> the right use case -> an outcome for the broker (contract §6)."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Protocol

from s3_events_handler.application.limits import (
    MessageLimits,
    UnfinishedDeliveries,
    digest_of,
)
from s3_events_handler.application.log_context import bind_event_fields, event_log_context
from s3_events_handler.application.messages import (
    DeadLetter,
    Delivery,
    Done,
    EventFacts,
    Outcome,
    Retry,
    Split,
)
from s3_events_handler.application.reasons import reason_of
from s3_events_handler.application.retries import (
    RetrySchedule,
    dead_letter,
    transient_outcome,
    utc_now,
)
from s3_events_handler.application.telemetry import Telemetry
from s3_events_handler.domain.errors import (
    BadInput,
    ClaimedElsewhere,
    PermanentError,
    S3EventsHandlerError,
    pid_of,
    stage_of,
)
from s3_events_handler.domain.events import parse_record, peek
from s3_events_handler.domain.model import EventKind, S3Event, Stage
from s3_events_handler.domain.results import AlreadyHandled, Result, Sent

log = logging.getLogger(__name__)

# An AMQP short string (a correlation id) holds at most 255 bytes of UTF-8.
MAX_SHORT_STRING_BYTES = 255


class UseCase(Protocol):
    def execute(self, event: S3Event, *, correlation_id: str, pid: str | None) -> Result:
        """What became of `event`; `pid`: the one an earlier attempt minted, to reuse. A failure
        raises, carrying its stage and the PID the attempt had (`domain.errors.at_stage`)."""
        ...


class MessageHandler:
    """Turns a delivery into exactly one outcome; never raises.

    - Bad input and refusals are dead-lettered with the reason and the stage.
    - Anything else that fails is retried with backoff until the attempts run out.
    - A message with several records is split, each record then handled on its own.
    - A failure is counted against the outside system it came from where it is decided
      (`_failed`); the ledger's answers to the crash count keep readiness up to date.
    """

    def __init__(
        self,
        *,
        ingest: UseCase,
        remove: UseCase,
        retries: RetrySchedule,
        limits: MessageLimits | None = None,
        unfinished: UnfinishedDeliveries | None = None,
        clock: Callable[[], datetime] = utc_now,
        telemetry: Telemetry | None = None,
    ) -> None:
        """`unfinished`: where deliveries the consumer died during are counted (the ledger);
        none for a caller that does not consume a queue."""
        self._use_cases = {EventKind.CREATED: ingest, EventKind.REMOVED: remove}
        self._retries = retries
        self._limits = limits or MessageLimits()
        self._unfinished = unfinished
        self._clock = clock
        self._telemetry = telemetry or Telemetry()

    def handle(self, delivery: Delivery) -> Outcome:
        self._telemetry.event_started()
        try:
            with event_log_context(correlation_id=delivery.correlation_id):
                return self._within_limits(delivery)
        finally:
            self._telemetry.event_handled()

    def _within_limits(self, delivery: Delivery) -> Outcome:
        """A body too large is dead-lettered unread; a message the consumer died during too
        often is dead-lettered unhandled; any other is counted in while it is handled."""
        size, limits = len(delivery.body), self._limits
        if size > limits.max_bytes:
            reason = f"the body is {size} bytes, over MAX_MESSAGE_BYTES ({limits.max_bytes})"
            return self._dead_letter(reason, delivery.correlation_id, EventFacts())
        unfinished = self._unfinished
        if unfinished is None:
            return self._handle(delivery)
        digest = digest_of(delivery.body)
        try:
            deaths = unfinished.begin_delivery(digest)
        except S3EventsHandlerError as error:
            facts = EventFacts(stage=Stage.LEDGER.value, attempt=delivery.attempt)
            return self._failed(delivery, error, delivery.correlation_id, facts)
        self._telemetry.ledger_answered()
        handled = True
        try:
            if deaths >= limits.poison_limit:
                reason = (
                    f"the consumer died {deaths} times while handling this message "
                    f"(POISON_LIMIT {limits.poison_limit}): not handled again"
                )
                facts = EventFacts(stage=Stage.RECEIVED.value, attempt=delivery.attempt)
                return self._dead_letter(reason, delivery.correlation_id, facts)
            outcome = self._handle(delivery)
            handled = not isinstance(outcome, Retry) or outcome.attempted
            return outcome
        finally:
            try:
                unfinished.end_delivery(digest, handled=handled)
            except S3EventsHandlerError as error:
                self._count(error)
                log.warning("the message's crash count stays until it ends again: %s", error)
            else:
                self._telemetry.ledger_answered()

    def _handle(self, delivery: Delivery) -> Outcome:
        pid, correlation_id = delivery.pid, delivery.correlation_id
        facts = EventFacts(pid=pid, attempt=delivery.attempt)
        try:
            records = self._records(delivery.body)
            record = records[0]
            facts = _facts(record, pid, delivery.attempt)
            if len(records) > 1:
                bodies = tuple(json.dumps({"Records": [r]}).encode() for r in records)
                return Split(bodies, facts=replace(facts, bucket=None, key=None, event_time=None))
            if correlation_id is None:
                correlation_id = _correlation_id_of(record)
            bind_event_fields(correlation_id=correlation_id, bucket=facts.bucket, key=facts.key)
            event = parse_record(record)
            use_case = self._use_cases[event.kind]
            result = use_case.execute(event, correlation_id=correlation_id, pid=pid)
        except Exception as error:  # the service never stops for one message
            stage = stage_of(error) or Stage.PARSE
            facts = replace(facts, pid=pid_of(error) or pid, stage=stage.value)
            return self._failed(delivery, error, correlation_id, facts)
        log.debug("done: %s", result)
        known = result.pid if isinstance(result, (Sent, AlreadyHandled)) else None
        facts = replace(facts, pid=known or pid, stage=result.stage.value)
        return Done(result=result, correlation_id=correlation_id, facts=facts)

    def _failed(
        self, delivery: Delivery, error: Exception, correlation_id: str | None, facts: EventFacts
    ) -> Outcome:
        """The one place a failure becomes an outcome: counted against the system it came
        from, then dead-lettered (permanent), back later (claimed elsewhere) or retried."""
        self._count(error)
        if isinstance(error, PermanentError):
            return self._dead_letter(str(error), correlation_id, facts)
        attempt = delivery.attempt
        if isinstance(error, ClaimedElsewhere):
            # Another consumer is on the event: it comes back after the shortest delay, its
            # attempt not counted, and finds it done or the claim lapsed (contract §6).
            reason, delay = reason_of(error), self._retries.delays[0]
            log.info("not handled now, back in %d s: %s", delay, reason)
            correlation_id = correlation_id or str(uuid.uuid4())
            return Retry(reason, delay, attempt, correlation_id, facts, attempted=False)
        outcome = transient_outcome(
            delivery,
            error,
            self._retries,
            clock=self._clock,
            correlation_id=correlation_id,
            facts=facts,
        )
        if isinstance(outcome, DeadLetter):
            log.error("dead-lettered at %s: %s", facts.stage, outcome.reason)
        elif isinstance(error, S3EventsHandlerError):
            log.warning("attempt %d failed at %s: %s", attempt, facts.stage, outcome.reason)
        else:
            log.exception("unexpected failure at %s (attempt %d)", facts.stage, attempt)
        return outcome

    def _count(self, error: Exception) -> None:
        """An outside system's failure or refusal, counted under its name; bad input is the
        event's fault and a bug ours: neither is counted."""
        if isinstance(error, S3EventsHandlerError) and error.system is not None:
            self._telemetry.downstream_error(error.system)

    def _records(self, body: bytes) -> list[Any]:
        try:
            message = json.loads(body)
        except (UnicodeDecodeError, ValueError, RecursionError) as error:
            raise BadInput(f"body is not JSON: {error}") from error
        if not isinstance(message, dict):
            raise BadInput("body is not a JSON object")
        records = message.get("Records")
        if not isinstance(records, list) or not records:
            raise BadInput("Records is missing, not a list, or empty")
        if len(records) > self._limits.max_records:
            raise BadInput(
                f"{len(records)} records, over MAX_RECORDS ({self._limits.max_records}): not split"
            )
        return records

    def _dead_letter(self, reason: str, correlation_id: str | None, facts: EventFacts) -> Outcome:
        outcome = dead_letter(reason, correlation_id=correlation_id, facts=facts, now=self._clock())
        log.error("dead-lettered at %s: %s", facts.stage, outcome.reason)
        return outcome


def _facts(record: Any, pid: str | None, attempt: int) -> EventFacts:
    """What is known of the event at stage `parse`, for its log line and metrics: bucket and
    key as the record gives them, so bad input is reported as it came."""
    kind, bucket, key = peek(record)
    return EventFacts(
        kind="removed" if kind is EventKind.REMOVED else "created",
        bucket=bucket,
        key=key,
        pid=pid,
        attempt=attempt,
        event_time=_event_time_of(record),
    )


def _event_time_of(record: Any) -> float | None:
    """The record's `eventTime` (ISO 8601, UTC by default) as Unix seconds; None if unreadable."""
    value = record.get("eventTime") if isinstance(record, dict) else None
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _correlation_id_of(record: Any) -> str:
    """The gateway's request id, where it can travel as an AMQP short string; else a new one."""
    elements = record.get("responseElements") if isinstance(record, dict) else None
    request_id = elements.get("x-viaa-request-id") if isinstance(elements, dict) else None
    if isinstance(request_id, str) and request_id:
        try:
            if len(request_id.encode("utf-8")) <= MAX_SHORT_STRING_BYTES:
                return request_id
        except UnicodeEncodeError:  # a lone surrogate
            pass
    return str(uuid.uuid4())

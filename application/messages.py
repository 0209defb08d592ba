"""What the broker hands the application, and what the application asks of the broker."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from s3_events_handler.domain.results import EventOutcome, Result


@dataclass(frozen=True, slots=True)
class EventFacts:
    """What is known of the event behind an outcome, for its log line and its metrics.

    Bad input is reported too, so every field but `kind` may be unknown. `kind` is
    `created` or `removed` as the record's `eventName` says; a message that says
    neither (not JSON, no records, no or another event name) counts as `created`,
    the flow almost every message takes, so the metric keeps its two kinds.
    """

    kind: str = "created"
    bucket: str | None = None
    key: str | None = None
    pid: str | None = None
    stage: str = "parse"
    """Where the attempt ended: a `Stage` value (`done` once all went through)."""
    attempt: int = 1
    event_time: float | None = None
    """When the object changed, as the record's `eventTime` says (Unix seconds)."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One incoming message, as far as the application needs to see it."""

    body: bytes
    headers: Mapping[str, Any] = field(default_factory=dict)
    correlation_id: str | None = None


@dataclass(frozen=True, slots=True)
class Done:
    """Handled (or nothing to do): ack. `result` says which, for a caller to act on."""

    result: Result
    correlation_id: str | None = None
    facts: EventFacts = field(default_factory=EventFacts)

    @property
    def summary(self) -> str:
        """The one line logs and the `process` command show."""
        return str(self.result)

    @property
    def event_outcome(self) -> EventOutcome:
        """`done`, or `skipped` when there was nothing to do: as the result says."""
        return self.result.outcome


@dataclass(frozen=True, slots=True)
class Split:
    """Several records in one message: republish each on its own to the incoming queue, then ack."""

    event_outcome: ClassVar[EventOutcome] = EventOutcome.SPLIT

    bodies: tuple[bytes, ...]
    facts: EventFacts = field(default_factory=EventFacts)


@dataclass(frozen=True, slots=True)
class Retry:
    """Try again after `delay_seconds`: republish with `headers` to that delay's queue, then ack."""

    event_outcome: ClassVar[EventOutcome] = EventOutcome.RETRIED

    reason: str
    delay_seconds: int
    headers: Mapping[str, Any]
    correlation_id: str
    facts: EventFacts = field(default_factory=EventFacts)
    attempted: bool = True
    """False when nothing was tried: another consumer holds the event (its attempt count
    stays as it was)."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Give up: republish with `headers` (`x-error`, `x-error-stage`) to the dead-letter queue.

    `stage` is the `x-error-stage` text, a `Stage` value.
    """

    event_outcome: ClassVar[EventOutcome] = EventOutcome.DEAD_LETTERED

    reason: str
    stage: str
    headers: Mapping[str, Any]
    correlation_id: str | None = None
    facts: EventFacts = field(default_factory=EventFacts)


Outcome = Done | Split | Retry | DeadLetter

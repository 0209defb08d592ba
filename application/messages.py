"""What the broker hands the application, and what the application asks of the broker."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar

from s3_events_handler.domain.results import EventOutcome, Result


@dataclass(frozen=True, slots=True)
class EventFacts:
    """What is known of the event behind an outcome, for its log line and its metrics; for bad
    input every field may be unknown but `kind`, which counts a message that names neither
    kind as `created`, so the metric keeps its two kinds."""

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
    correlation_id: str | None = None
    attempt: int = 1
    """Which attempt at the event this is: 1, or what the retry before it counted."""
    pid: str | None = None
    """The PID an earlier attempt minted, for this one to reuse; only a valid PID."""


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
    """Try again after `delay_seconds`: republish to that delay's queue, then ack. The copy
    comes back as attempt `next_attempt`, with the PID of `facts`, so the retry reuses it."""

    event_outcome: ClassVar[EventOutcome] = EventOutcome.RETRIED

    reason: str
    delay_seconds: int
    next_attempt: int
    correlation_id: str
    facts: EventFacts = field(default_factory=EventFacts)
    attempted: bool = True
    """False when nothing was tried: another consumer holds the event; the copy is the
    message as it came, its attempt count as it was."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Give up: republish to the dead-letter queue with the reason, the stage (a `Stage`
    value), when, and the PID of `facts` (a replay reuses it), then ack."""

    event_outcome: ClassVar[EventOutcome] = EventOutcome.DEAD_LETTERED

    reason: str
    stage: str
    correlation_id: str | None = None
    facts: EventFacts = field(default_factory=EventFacts)
    dead_lettered_at: datetime | None = None


Outcome = Done | Split | Retry | DeadLetter

"""What the service tells its operators about itself, as a port (contract §7): an adapter turns
it into metrics and health; the port itself tells nobody, for where nobody watches.
"""

from __future__ import annotations

from dataclasses import dataclass

from s3_events_handler.application.messages import DeadLetter, Done, EventFacts, Outcome, Retry
from s3_events_handler.domain.errors import System
from s3_events_handler.domain.results import EventOutcome

EVENT_KINDS = ("created", "removed")
"""The values of `EventFacts.kind`, so an adapter can show every series from the start."""


@dataclass(frozen=True, slots=True)
class EventReport:
    """One event settled with the broker: what its metrics count and its log line says."""

    outcome: EventOutcome
    facts: EventFacts
    correlation_id: str | None
    seconds: float
    """From the delivery taken in hand until it was settled."""
    result: str | None = None
    """What a done or skipped event came to, a result's `kind` (`sent`, `already-handled`, …)."""
    reason: str | None = None
    """Why it was retried or dead-lettered."""

    @classmethod
    def of(cls, outcome: Outcome, *, correlation_id: str | None, seconds: float) -> EventReport:
        """`correlation_id` as the settlement used it (the outcome's, else the incoming one)."""
        result = outcome.result.kind if isinstance(outcome, Done) else None
        reason = outcome.reason if isinstance(outcome, (Retry, DeadLetter)) else None
        facts = outcome.facts
        return cls(outcome.event_outcome, facts, correlation_id, seconds, result, reason)

    def log_fields(self) -> dict[str, object]:
        """The fields of the event's one log line: contract §7's (`pid` only when known), then
        `result` or `reason` where there is one."""
        facts = self.facts
        fields: dict[str, object] = {
            "correlation_id": self.correlation_id,
            "kind": facts.kind,
            "bucket": facts.bucket,
            "key": facts.key,
        }
        if facts.pid is not None:
            fields["pid"] = facts.pid
        fields.update(
            outcome=self.outcome.value,
            stage=facts.stage,
            attempt=facts.attempt,
            duration_ms=round(self.seconds * 1000, 1),
        )
        if self.result is not None:
            fields["result"] = self.result
        if self.reason is not None:
            fields["reason"] = self.reason
        return fields


class Telemetry:
    """Told what the consumer does, as it happens; every method returns at once and never raises.

    Each does nothing here: an adapter overrides what it watches.
    """

    def event_started(self) -> None:
        """The handler took up a message."""

    def event_handled(self) -> None:
        """The handler is through with the message it took up (whatever became of it)."""

    def event_finished(self, report: EventReport) -> None:
        """The event's outcome was carried out with the broker and the delivery acked."""

    def ledger_hit(self) -> None:
        """A use case's claim found its event taken in before (`EventClaim`'s `on_recall`)."""

    def ledger_answered(self) -> None:
        """A statement of the handler's crash count succeeded: the ledger answers (again)."""

    def downstream_error(self, system: System) -> None:
        """A call to `system` failed or was refused: told once an attempt, where the handler
        decides its outcome."""

    def connected(self) -> None:
        """Connected to the broker and consuming."""

    def stopping(self) -> None:
        """A stop was asked for: the consumer takes nothing new and finishes what it has.

        Called from a signal handler, so it must only set a flag.
        """

    def disconnected(self) -> None:
        """No longer consuming: the connection was lost, or the consumer stops."""

    def loop_tick(self) -> None:
        """The consumer loop came round: it is not stuck."""


# With the outcomes and systems telemetry reports, where its adapters look for them.
__all__ = ["EVENT_KINDS", "EventOutcome", "EventReport", "System", "Telemetry"]

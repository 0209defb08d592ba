"""What the broker hands the application, and what the application asks of the broker."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from s3_events_handler.domain.results import Result


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

    @property
    def summary(self) -> str:
        """The one line logs and the `process` command show."""
        return str(self.result)


@dataclass(frozen=True, slots=True)
class Split:
    """Several records in one message: republish each on its own to the incoming queue, then ack."""

    bodies: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Retry:
    """Try again after `delay_seconds`: republish with `headers` to that delay's queue, then ack."""

    reason: str
    delay_seconds: int
    headers: Mapping[str, Any]
    correlation_id: str


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Give up: republish with `headers` (`x-error`, `x-error-stage`) to the dead-letter queue.

    `stage` is the `x-error-stage` text, a `Stage` value.
    """

    reason: str
    stage: str
    headers: Mapping[str, Any]
    correlation_id: str | None = None


Outcome = Done | Split | Retry | DeadLetter

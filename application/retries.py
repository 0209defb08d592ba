"""Which retry queue a failed message waits in, how often it may fail, and the retry or dead
letter a failure becomes (contract §6)."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from s3_events_handler.application.messages import DeadLetter, Delivery, EventFacts, Retry, Split
from s3_events_handler.application.reasons import one_line, reason_of
from s3_events_handler.domain.errors import ServiceUnavailable
from s3_events_handler.domain.model import Stage


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    """The retry queues' delays in seconds, shortest first (`RETRY_DELAYS`), and the attempts
    an event gets before it is dead-lettered (`RETRY_MAX_ATTEMPTS`)."""

    delays: tuple[int, ...] = (10, 30, 90, 270, 810)
    max_attempts: int = 8

    def delay_after(self, attempt: int) -> int:
        """The wait after failed attempt `attempt`; attempts past the last delay stay on it."""
        return self.delays[min(attempt, len(self.delays)) - 1]

    def queue_delay(self, seconds: int) -> int:
        """The delay whose queue holds a wait of `seconds` (only those delays have a queue): the
        nearest not below it, else the longest."""
        return min((delay for delay in self.delays if delay >= seconds), default=max(self.delays))


def utc_now() -> datetime:
    return datetime.now(UTC)


def dead_letter(
    reason: str, *, correlation_id: str | None, facts: EventFacts, now: datetime
) -> DeadLetter:
    """A message given up on at `now`: the reason on one line, the stage, and the PID minted
    (a replay reuses it, even when the ledger forgot it)."""
    return DeadLetter(
        reason=one_line(reason),
        stage=facts.stage,
        correlation_id=correlation_id,
        facts=facts,
        dead_lettered_at=now,
    )


def transient_outcome(
    delivery: Delivery,
    error: BaseException,
    retries: RetrySchedule,
    *,
    clock: Callable[[], datetime] = utc_now,
    correlation_id: str | None = None,
    facts: EventFacts | None = None,
) -> Retry | DeadLetter:
    """A transient failure of `delivery`: retried as the next attempt, with the PID of `facts`,
    after the backoff of its attempt (or the longer wait a `ServiceUnavailable` asked for), and
    dead-lettered once its attempts are spent (contract §6). Also what a delivery becomes whose
    handling raised (a bug): then `facts` are what the delivery says, at stage `received`.
    """
    attempt = delivery.attempt
    reason = reason_of(error)
    correlation_id = correlation_id or delivery.correlation_id or str(uuid.uuid4())
    if facts is None:
        facts = EventFacts(pid=delivery.pid, stage=Stage.RECEIVED.value, attempt=attempt)
    if attempt >= retries.max_attempts:
        reason = f"gave up after {attempt} attempts: {reason}"
        return dead_letter(reason, correlation_id=correlation_id, facts=facts, now=clock())
    delay = retries.delay_after(attempt)
    if isinstance(error, ServiceUnavailable) and error.retry_after:
        delay = max(delay, math.ceil(error.retry_after))  # as the service asked
    return Retry(reason, delay, attempt + 1, correlation_id, facts)


def retry_instead(
    delivery: Delivery, refused: Split | DeadLetter, reason: str, retries: RetrySchedule
) -> Retry:
    """The retry that takes the place of an outcome the broker would not take (a dead-letter
    queue that refuses publishes, contract §6), after the backoff of its attempt: always a
    retry, also past the last attempt, since the dead letters are what refused it."""
    correlation_id = (
        (refused.correlation_id if isinstance(refused, DeadLetter) else None)
        or delivery.correlation_id
        or str(uuid.uuid4())
    )
    delay = retries.delay_after(delivery.attempt)
    return Retry(reason, delay, delivery.attempt + 1, correlation_id, refused.facts)

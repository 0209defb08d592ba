"""The headers that carry an event's history from one copy of its message to the next
(contract §6): the attempt count, the PID minted, and a dead letter's verdict. The application
speaks of attempts, PIDs and reasons; this is where they become AMQP headers and back."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from s3_events_handler.application.messages import DeadLetter, Delivery, Retry
from s3_events_handler.domain.rules import is_valid_pid

ATTEMPT_HEADER = "x-attempt"
PID_HEADER = "x-pid"
ERROR_HEADER = "x-error"
STAGE_HEADER = "x-error-stage"
# When the message was dead-lettered (ISO 8601, UTC): `dead-letters list` shows it, and a
# copied `timestamp` property would only tell when the gateway first published the event.
DEAD_LETTERED_AT_HEADER = "x-dead-lettered-at"
# A replayed event starts over: a full set of attempts, and no verdict of the last run to
# mislead whoever reads it next. `x-pid` stays, so the replay reuses the PID minted before.
CLEARED_ON_REPLAY = (ATTEMPT_HEADER, ERROR_HEADER, STAGE_HEADER, DEAD_LETTERED_AT_HEADER)


def delivery_of(body: bytes, properties: Any) -> Delivery:
    """A message as the application sees it: its attempt and PID_HEADER read from its headers."""
    headers = properties.headers or {}
    return Delivery(
        body=body,
        correlation_id=properties.correlation_id,
        attempt=attempt_of(headers),
        pid=pid_of(headers),
    )


def attempt_of(headers: Mapping[str, Any]) -> int:
    """`x-attempt`; 1 when it is missing or not a positive whole number."""
    value = headers.get(ATTEMPT_HEADER, 1)
    try:
        attempt = int(value)
    except (TypeError, ValueError, OverflowError):
        return 1
    return max(attempt, 1)


def pid_of(headers: Mapping[str, Any]) -> str | None:
    """`x-pid` when it holds a valid PID; anything else is not used."""
    value = text_of(headers, PID_HEADER)
    return value if value is not None and is_valid_pid(value) else None


def text_of(headers: Mapping[str, Any], name: str) -> str | None:
    """The header `name` as text (pika gives AMQP long strings as bytes); None if not text."""
    value = headers.get(name)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def dead_lettered_at(properties: Any) -> datetime | None:
    """When a dead letter was dead-lettered (`x-dead-lettered-at`). Older dead letters do not
    say: then when the broker last moved it (`x-death`), else its `timestamp` property."""
    headers = properties.headers or {}
    stamped = text_of(headers, DEAD_LETTERED_AT_HEADER)
    if stamped:
        try:
            return datetime.fromisoformat(stamped)
        except ValueError:
            pass
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        moved = deaths[0].get("time")
        if isinstance(moved, datetime):
            return moved if moved.tzinfo else moved.replace(tzinfo=UTC)
    timestamp = properties.timestamp
    if isinstance(timestamp, int) and not isinstance(timestamp, bool):
        return datetime.fromtimestamp(timestamp, UTC)
    return None


def headers_for(outcome: Retry | DeadLetter, headers: Mapping[str, Any]) -> dict[str, Any]:
    """The headers the copy `outcome` asks for carries: the delivery's `headers`, and what the
    outcome adds. A retry of an event nobody tried (`attempted` false) adds nothing."""
    copied = dict(headers)
    if isinstance(outcome, DeadLetter):
        copied[ERROR_HEADER] = outcome.reason
        copied[STAGE_HEADER] = outcome.stage
        if outcome.dead_lettered_at is not None:
            copied[DEAD_LETTERED_AT_HEADER] = outcome.dead_lettered_at.isoformat(timespec="seconds")
    elif outcome.attempted:
        copied[ATTEMPT_HEADER] = outcome.next_attempt
    else:
        return copied
    if outcome.facts.pid is not None:
        copied[PID_HEADER] = outcome.facts.pid
    return copied


def replay_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    """`headers` without the attempt count and the dead-letter verdict; the rest kept."""
    return {name: value for name, value in headers.items() if name not in CLEARED_ON_REPLAY}

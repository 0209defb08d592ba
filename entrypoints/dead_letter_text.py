"""How a dead letter reads for an operator: a row of the table (`list`, a dry run), a JSON
object (`list --json`), every detail (`show`); text that could hurt a terminal escaped."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

from s3_events_handler.adapters.rabbitmq.dead_letter_model import dead_letter_id
from s3_events_handler.adapters.rabbitmq.dead_letters import WINDOW
from s3_events_handler.adapters.rabbitmq.headers import (
    ERROR_HEADER,
    PID_HEADER,
    STAGE_HEADER,
    dead_lettered_at,
    text_of,
)
from s3_events_handler.adapters.rabbitmq.settlement import Received
from s3_events_handler.domain.events import peek
from s3_events_handler.entrypoints.terminal import printable

COLUMNS = ("ID", "DEAD-LETTERED", "STAGE", "OBJECT", "REASON")
# The AMQP properties `show` prints, in the protocol's order; `headers` has its own part.
PROPERTIES = ("content_type", "content_encoding", "delivery_mode", "priority", "correlation_id",
              "reply_to", "expiration", "message_id", "timestamp", "type", "user_id", "app_id",
              "cluster_id")  # fmt: skip


class Table:
    """The table, each row printed as it comes. The first `WINDOW` rows (or all, when
    fewer: what one pass holds unacked) set the columns' widths, as wide as their widest
    cell; a longer cell further on widens its own row only. The reason, last, is as long
    as it is."""

    def __init__(self, write: Callable[[str], object]) -> None:
        self._write = write
        self._waiting: list[tuple[str, ...]] = []
        self._widths: list[int] | None = None

    def add(self, letter: Received) -> None:
        row = _row(letter)
        if self._widths is None:
            self._waiting.append(row)
            if len(self._waiting) >= WINDOW:
                self._start()
        else:
            self._print(row)

    def close(self) -> None:
        """Print what waits; a table without rows prints nothing, not even its heading."""
        if self._widths is None and self._waiting:
            self._start()

    def _start(self) -> None:
        rows = [COLUMNS, *self._waiting]
        self._widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)]
        self._waiting = []
        for row in rows:
            self._print(row)

    def _print(self, row: tuple[str, ...]) -> None:
        widths = self._widths or []
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        self._write("  ".join([*cells, row[-1]]))


def _row(letter: Received) -> tuple[str, ...]:
    said = facts(letter)
    where = _object(said["bucket"], said["key"])
    cells = (said["id"], said["dead_lettered_at"], said["stage"], where, said["reason"])
    return tuple(printable(cell or "-") for cell in cells)


def json_line(letter: Received) -> str:
    """What the table shows of one dead letter, and its PID, as one JSON object: text as it
    is (JSON escapes what a terminal should not see), null for what it does not say."""
    return json.dumps(facts(letter))


def facts(letter: Received) -> dict[str, str | None]:
    bucket, key = bucket_and_key(letter)
    return {
        "id": dead_letter_id(letter),
        "dead_lettered_at": _time(dead_lettered_at(letter.properties)),
        "stage": text_of(letter.headers, STAGE_HEADER),
        "reason": text_of(letter.headers, ERROR_HEADER),
        "bucket": bucket,
        "key": key,
        "pid": text_of(letter.headers, PID_HEADER),
    }


def details(letter: Received) -> list[str]:
    """`show`'s account of one dead letter: id, time, properties, headers and body."""
    lines = [f"id             {printable(dead_letter_id(letter))}",
             f"dead-lettered  {_time(dead_lettered_at(letter.properties)) or '-'}",
             "properties"]  # fmt: skip
    for name in PROPERTIES:
        value = getattr(letter.properties, name, None)
        if value is not None:
            lines.append(f"  {name}: {_value(value)}")
    lines.append("headers")
    lines.extend(
        f"  {printable(str(name))}: {_value(value)}" for name, value in letter.headers.items()
    )
    text = letter.body.decode("utf-8", "backslashreplace")
    lines.append(f"body ({len(letter.body)} bytes)")
    lines.extend(printable(line) for line in text.split("\n"))
    return lines


def _value(value: object) -> str:
    """A property or header value on one line: text as it is, anything else as JSON."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "backslashreplace")
    if isinstance(value, str):
        return printable(value)
    return printable(json.dumps(value, default=str, ensure_ascii=False))


def _time(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def object_of(letter: Received) -> str:
    return printable(_object(*bucket_and_key(letter)) or "-")


def _object(bucket: str | None, key: str | None) -> str | None:
    """`bucket/key` of the event's first record, as far as the body says; None when it says
    neither (a dead letter is often a body that is not an event at all)."""
    if bucket is None and key is None:
        return None
    return f"{bucket or '-'}/{key or '-'}"


def bucket_and_key(letter: Received) -> tuple[str | None, str | None]:
    """Bucket and key of the event's first record, each None where the body does not say."""
    try:
        message = json.loads(letter.body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None, None
    records = message.get("Records") if isinstance(message, dict) else None
    _, bucket, key = peek(records[0] if isinstance(records, list) and records else None)
    return bucket or None, key or None

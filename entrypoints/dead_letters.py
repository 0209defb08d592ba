"""`dead-letters list` and `dead-letters replay`: the dead-letter queue as an operator sees it."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from s3_events_handler.adapters.rabbitmq.dead_letters import (
    DeadLetterQueue,
    ParkedMessage,
    ReplayStopped,
    ReplayTally,
)
from s3_events_handler.application.replay import Selection
from s3_events_handler.domain.errors import ServiceUnavailable
from s3_events_handler.entrypoints.exit_codes import ExitCode

# The shared statuses (entrypoints/exit_codes.py), by what they mean here.
EXIT_OK = ExitCode.OK
EXIT_FAILED = ExitCode.FAILED
COLUMNS = ("ID", "DEAD-LETTERED", "STAGE", "OBJECT", "REASON")


def list_dead_letters(queue: DeadLetterQueue, out: TextIO) -> int:
    """A table of the dead letters, head of the queue first; every one stays in the queue."""
    try:
        letters = queue.browse()
    except ServiceUnavailable as error:
        return _failed(error)
    if not letters:
        print(f"no dead letters in {queue.name}", file=out)
        return EXIT_OK
    _print_table(out, [_row(letter) for letter in letters])
    print(f"{len(letters)} dead letter(s) in {queue.name}, all left in place", file=out)
    return EXIT_OK


def replay_dead_letters(
    queue: DeadLetterQueue,
    selection: Selection,
    *,
    incoming_queue: str,
    dry_run: bool,
    out: TextIO,
) -> int:
    """Move the chosen dead letters back to the incoming queue, one transaction each; with
    `dry_run`, only say which."""
    if dry_run:
        return _dry_run(queue, selection, incoming_queue, out)
    print(f"replaying from {queue.name} to {incoming_queue}", file=out, flush=True)
    found: list[str] = []

    def chosen(letter: ParkedMessage) -> bool:
        picked = selection.chooses(letter.id, letter.reason)
        if picked:
            found.append(letter.id)
        return picked

    def replayed(letter: ParkedMessage) -> None:
        print(f"replayed  {_printable(letter.id)}  {_object_of(letter.body)}", file=out, flush=True)

    try:
        tally = queue.replay(chosen, replayed)
    except (ServiceUnavailable, ReplayStopped) as error:
        return _failed(error)
    for letter, why in tally.unpublishable:
        print(f"skipped   {_printable(letter.id)}: cannot be republished as it is: {why}", file=out)
    missing = sorted(selection.ids - set(found))
    for message_id in missing:
        print(f"not found {_printable(message_id)}: no such dead letter in {queue.name}", file=out)
    print(_summary(tally), file=out)
    return EXIT_FAILED if tally.unpublishable or missing else EXIT_OK


def _dry_run(queue: DeadLetterQueue, selection: Selection, incoming_queue: str, out: TextIO) -> int:
    try:
        letters = queue.browse()
    except ServiceUnavailable as error:
        return _failed(error)
    chosen = [letter for letter in letters if selection.chooses(letter.id, letter.reason)]
    print(f"dry run: would replay from {queue.name} to {incoming_queue}", file=out)
    if chosen:
        _print_table(out, [_row(letter) for letter in chosen])
    print(
        f"dry run: would replay {len(chosen)}, skip {len(letters) - len(chosen)} "
        "(not chosen); nothing was changed",
        file=out,
    )
    return EXIT_OK


def _summary(tally: ReplayTally) -> str:
    skipped = tally.not_chosen + len(tally.unpublishable)
    reasons = []
    if tally.not_chosen:
        reasons.append(f"{tally.not_chosen} not chosen")
    if tally.unpublishable:
        reasons.append(f"{len(tally.unpublishable)} cannot be republished")
    why = f" ({', '.join(reasons)}; still in the dead-letter queue)" if reasons else ""
    return f"replayed {tally.replayed}, skipped {skipped}{why}"


def _failed(error: Exception) -> int:
    print(f"s3-events-handler: {error}", file=sys.stderr)
    return EXIT_FAILED


def _row(letter: ParkedMessage) -> tuple[str, ...]:
    return (
        _printable(letter.id),
        _time(letter.dead_lettered_at),
        _printable(letter.stage or "-"),
        _object_of(letter.body),
        _printable(letter.reason or "-"),
    )


def _print_table(out: TextIO, rows: Sequence[tuple[str, ...]]) -> None:
    """Columns as wide as their widest cell; the reason, last, as long as it is."""
    widths = [max(len(row[i]) for row in (COLUMNS, *rows)) for i in range(len(COLUMNS) - 1)]
    for row in (COLUMNS, *rows):
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]), file=out)


def _time(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _object_of(body: bytes) -> str:
    """`bucket/key` of the event's first record, as far as the body says; `-` for what it
    does not (a dead letter is often a body that is not an event at all)."""
    try:
        message = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return "-"
    records = message.get("Records") if isinstance(message, dict) else None
    record = records[0] if isinstance(records, list) and records else None
    s3 = record.get("s3") if isinstance(record, dict) else None
    bucket, key = _field(s3, "bucket", "name"), _field(s3, "object", "key")
    if bucket is None and key is None:
        return "-"
    return _printable(f"{bucket or '-'}/{key or '-'}")


def _field(section: Any, outer: str, inner: str) -> str | None:
    part = section.get(outer) if isinstance(section, dict) else None
    value = part.get(inner) if isinstance(part, dict) else None
    return value if isinstance(value, str) and value else None


def _printable(text: str) -> str:
    """One line on a terminal: control characters (from a hostile key, say) shown escaped."""
    return "".join(char if char.isprintable() else _escaped(char) for char in text)


def _escaped(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

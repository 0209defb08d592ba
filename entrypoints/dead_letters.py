"""`dead-letters list` and `dead-letters replay`: the dead-letter queue as an operator sees it."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from s3_events_handler.adapters.rabbitmq.dead_letters import (
    WINDOW,
    DeadLetterQueue,
    ParkedMessage,
    ReplayStopped,
    Tally,
)
from s3_events_handler.application.replay import Selection
from s3_events_handler.domain.errors import ServiceUnavailable

EXIT_OK = 0
EXIT_FAILED = 1
COLUMNS = ("ID", "DEAD-LETTERED", "STAGE", "OBJECT", "REASON")


def list_dead_letters(queue: DeadLetterQueue, out: TextIO) -> int:
    """A table of the dead letters, head of the queue first, each row printed as it is read;
    every one stays in the queue."""
    table = _Table(out)

    def each(letter: ParkedMessage) -> bool:
        table.add(_row(letter))
        return True

    try:
        tally = queue.browse(each)
    except ServiceUnavailable as error:
        return _failed(error)
    table.close()
    if tally.looked_at == 0:
        print(f"no dead letters in {queue.name}", file=out)
    else:
        print(f"{tally.looked_at} dead letter(s) in {queue.name}, all left in place", file=out)
    _warn_of(tally, queue.name)
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
    for letter_id, why in tally.unpublishable:
        print(f"skipped   {_printable(letter_id)}: cannot be republished as it is: {why}", file=out)
    missing = sorted(selection.ids - set(found))
    for message_id in missing:
        print(f"not found {_printable(message_id)}: no such dead letter in {queue.name}", file=out)
    print(_summary(tally), file=out)
    _warn_of(tally, queue.name)
    return EXIT_FAILED if tally.unpublishable or missing else EXIT_OK


def _dry_run(queue: DeadLetterQueue, selection: Selection, incoming_queue: str, out: TextIO) -> int:
    print(f"dry run: would replay from {queue.name} to {incoming_queue}", file=out)
    table = _Table(out)
    chosen = 0

    def each(letter: ParkedMessage) -> bool:
        nonlocal chosen
        if selection.chooses(letter.id, letter.reason):
            chosen += 1
            table.add(_row(letter))
        return True

    try:
        tally = queue.browse(each)
    except ServiceUnavailable as error:
        return _failed(error)
    table.close()
    print(
        f"dry run: would replay {chosen}, skip {tally.looked_at - chosen} "
        "(not chosen); nothing was changed",
        file=out,
    )
    _warn_of(tally, queue.name)
    return EXIT_OK


def _summary(tally: Tally) -> str:
    skipped = tally.kept + len(tally.unpublishable)
    reasons = []
    if tally.kept:
        reasons.append(f"{tally.kept} not chosen")
    if tally.unpublishable:
        reasons.append(f"{len(tally.unpublishable)} cannot be republished")
    why = f" ({', '.join(reasons)}; still in the dead-letter queue)" if reasons else ""
    return f"replayed {tally.removed}, skipped {skipped}{why}"


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


class _Table:
    """The table, each row printed as it comes. The first `buffered` rows (or all, when
    fewer) set the columns' widths, as wide as their widest cell; a longer cell further on
    widens its own row only. The reason, last, is as long as it is."""

    def __init__(self, out: TextIO, *, buffered: int = WINDOW) -> None:
        self._out = out
        self._buffered = buffered
        self._waiting: list[tuple[str, ...]] = []
        self._widths: list[int] | None = None

    def add(self, row: tuple[str, ...]) -> None:
        if self._widths is None:
            self._waiting.append(row)
            if len(self._waiting) >= self._buffered:
                self._start()
        else:
            self._print(row)

    def close(self) -> None:
        """Print what waits; a table without rows prints nothing, not even its heading."""
        if self._widths is None and self._waiting:
            self._start()
        self._out.flush()

    def _start(self) -> None:
        rows = [COLUMNS, *self._waiting]
        self._widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)]
        self._waiting = []
        for row in rows:
            self._print(row)

    def _print(self, row: tuple[str, ...]) -> None:
        widths = self._widths or []
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]), file=self._out)


def _warn_of(tally: Tally, queue: str) -> None:
    """On standard error, what the pass could not do as it should."""
    for letter_id, why in tally.out_of_place:
        print(
            f"s3-events-handler: dead letter {_printable(letter_id)} could not be put back "
            f"in its place (AMQP cannot carry it again as it is: {why}); it is at the head "
            f"of {queue}",
            file=sys.stderr,
        )
    if tally.short:
        print(
            f"s3-events-handler: {queue} held fewer dead letters than when this began "
            f"({tally.there}); something else took some meanwhile",
            file=sys.stderr,
        )


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

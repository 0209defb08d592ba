"""The `dead-letters` commands: the dead-letter queue as an operator sees it."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

from s3_events_handler.adapters.logs import with_fields
from s3_events_handler.adapters.rabbitmq.dead_letter_model import (
    ParkedMessage,
    ReplayStopped,
    Tally,
)
from s3_events_handler.adapters.rabbitmq.dead_letters import WINDOW, DeadLetterQueue
from s3_events_handler.application.replay import Choosing
from s3_events_handler.domain.errors import ServiceUnavailable
from s3_events_handler.entrypoints.exit_codes import ExitCode

# The shared statuses (entrypoints/exit_codes.py), by what they mean here.
EXIT_OK = ExitCode.OK
EXIT_FAILED = ExitCode.FAILED
EXIT_USAGE = ExitCode.SETTINGS
# Each dead letter `drop` removes, at INFO whatever level an operator command logs at
# otherwise (`REMOVALS_LOGGER`): who dropped what, and why it had been dead-lettered.
REMOVALS_LOGGER = "s3_events_handler.dead_letters.removals"
removals = logging.getLogger(REMOVALS_LOGGER)
COLUMNS = ("ID", "DEAD-LETTERED", "STAGE", "OBJECT", "REASON")


def list_dead_letters(
    queue: DeadLetterQueue, out: TextIO, *, as_json: bool = False, limit: int | None = None
) -> int:
    """The dead letters, head of the queue first, each printed as it is read: a table, or
    with `as_json` one JSON object a line; at most `limit`. Every one stays in the queue.

    The closing count goes below the table, or to standard error after JSON lines.
    """
    output = _Output(out)
    table = _Table(output.line)
    shown = 0

    def each(letter: ParkedMessage) -> bool:
        nonlocal shown
        shown += 1
        if as_json:
            output.line(json.dumps(_facts(letter)))
        else:
            table.add(_row(letter))
        return not output.gone and (limit is None or shown < limit)

    try:
        tally = queue.browse(each)
    except ServiceUnavailable as error:
        return _failed(error)
    table.close()
    if output.gone:
        return EXIT_OK  # the reader had enough (`| head`); the queue is as it was
    if tally.looked_at == 0:
        summary = f"no dead letters in {queue.name}"
    elif limit is not None and limit <= tally.looked_at < tally.there:
        summary = (
            f"{tally.looked_at} of {tally.there} dead letter(s) in {queue.name} shown "
            f"(--limit {limit}), all left in place"
        )
    else:
        summary = f"{tally.looked_at} dead letter(s) in {queue.name}, all left in place"
    if as_json:
        print(summary, file=sys.stderr)
    else:
        output.line(summary)
    _warn_of(tally, queue.name)
    return EXIT_OK


def show_dead_letter(queue: DeadLetterQueue, letter_id: str, out: TextIO) -> int:
    """Properties, headers and body of the dead letter `letter_id` (of each, should several
    share it: the records of one split share its message_id). Every one stays in the queue."""
    output = _Output(out)
    found = 0

    def each(letter: ParkedMessage) -> bool:
        nonlocal found
        if letter.id == letter_id:
            if found:
                output.line("")
            found += 1
            for line in _details(letter):
                output.line(line)
        return not output.gone

    try:
        tally = queue.browse(each)
    except ServiceUnavailable as error:
        return _failed(error)
    _warn_of(tally, queue.name)
    if output.gone or found:
        return EXIT_OK
    print(
        f"s3-events-handler: no dead letter {_printable(letter_id)} in {queue.name} "
        f"({tally.looked_at} looked at)",
        file=sys.stderr,
    )
    return EXIT_FAILED


def replay_dead_letters(
    queue: DeadLetterQueue,
    choosing: Choosing,
    *,
    incoming_queue: str,
    dry_run: bool,
    out: TextIO,
) -> int:
    """Move the chosen dead letters back to the incoming queue, one transaction each; with
    `dry_run`, only say which."""
    if dry_run:
        return _dry_run(queue, choosing, f"replay from {queue.name} to {incoming_queue}", out)
    print(f"replaying from {queue.name} to {incoming_queue}", file=out, flush=True)

    def replayed(letter: ParkedMessage) -> None:
        print(f"replayed  {_printable(letter.id)}  {_object_of(letter.body)}", file=out, flush=True)

    try:
        tally = queue.replay(
            lambda letter: choosing.take(letter.id, letter.reason),
            replayed,
            enough=lambda: choosing.enough,
        )
    except (ServiceUnavailable, ReplayStopped) as error:
        return _failed(error)
    for letter_id, why in tally.unpublishable:
        print(f"skipped   {_printable(letter_id)}: cannot be republished as it is: {why}", file=out)
    missing = _report_not_found(choosing, queue.name, out)
    print(_summary("replayed", tally, choosing), file=out)
    _warn_of(tally, queue.name)
    return EXIT_FAILED if tally.unpublishable or missing else EXIT_OK


def drop_dead_letters(
    queue: DeadLetterQueue,
    choosing: Choosing,
    *,
    what: str,
    yes: bool,
    dry_run: bool,
    out: TextIO,
    stdin: TextIO,
    err: TextIO,
) -> int:
    """Remove the chosen dead letters for good, each in a transaction of its own and logged
    (INFO, its id and reason). Unless `yes`, asked first on a terminal, and refused (exit 2)
    without one. With `dry_run`, only say which."""
    if dry_run:
        return _dry_run(queue, choosing, f"drop from {queue.name}", out)
    if not yes:
        refused = _confirm(queue, what, stdin=stdin, err=err)
        if refused is not None:
            return refused
    print(f"dropping from {queue.name}", file=out, flush=True)

    def dropped(letter: ParkedMessage) -> None:
        print(f"dropped   {_printable(letter.id)}  {_object_of(letter.body)}", file=out, flush=True)
        bucket, key = _bucket_and_key(letter.body)
        fields = {"dead_letter_id": letter.id, "reason": letter.reason, "stage": letter.stage,
                  "queue": queue.name, "bucket": bucket, "key": key, "pid": letter.pid}  # fmt: skip
        removals.info(
            "dropped dead letter %s from %s: %s",
            letter.id,
            queue.name,
            letter.reason or "(no x-error)",
            extra=with_fields(fields),
        )

    try:
        tally = queue.drop(
            lambda letter: choosing.take(letter.id, letter.reason),
            dropped,
            enough=lambda: choosing.enough,
        )
    except ServiceUnavailable as error:
        return _failed(error)
    missing = _report_not_found(choosing, queue.name, out)
    print(_summary("dropped", tally, choosing), file=out)
    _warn_of(tally, queue.name)
    return EXIT_FAILED if missing else EXIT_OK


def _confirm(queue: DeadLetterQueue, what: str, *, stdin: TextIO, err: TextIO) -> int | None:
    """Ask on the terminal before a drop: None to go on, else the exit status (2 with no
    terminal to ask on, 1 for any answer but yes)."""
    if not _is_terminal(stdin):
        print(
            "s3-events-handler: dead-letters drop removes dead letters for good: pass --yes "
            "to confirm (standard input is not a terminal to ask on)",
            file=err,
        )
        return EXIT_USAGE
    try:
        there = queue.depth()
    except ServiceUnavailable as error:
        return _failed(error)
    print(
        f"Drop {what} from {queue.name} ({there} dead letter(s) there now)? "
        "Nothing brings them back. [y/N] ",
        end="",
        file=err,
        flush=True,
    )
    try:
        answer = stdin.readline()
    except KeyboardInterrupt:
        answer = ""
    if is_yes(answer):
        return None
    print("\nnothing dropped" if not answer else "nothing dropped", file=err)
    return EXIT_FAILED


def is_yes(answer: str) -> bool:
    """`y` or `yes`, in any case: anything else, nothing at all included, is no."""
    return answer.strip().lower() in ("y", "yes")


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (OSError, ValueError):  # closed, or no descriptor
        return False


def _dry_run(queue: DeadLetterQueue, choosing: Choosing, would: str, out: TextIO) -> int:
    """The table of what `would` be done, changing nothing; exit 1, as the real thing, when
    an id asked for is not there."""
    verb = would.split()[0]
    print(f"dry run: would {would}", file=out)
    table = _Table(lambda line: print(line, file=out))

    def each(letter: ParkedMessage) -> bool:
        if choosing.take(letter.id, letter.reason):
            table.add(_row(letter))
        return not choosing.enough

    try:
        tally = queue.browse(each)
    except ServiceUnavailable as error:
        return _failed(error)
    table.close()
    missing = _report_not_found(choosing, queue.name, out)
    skipped = tally.looked_at - choosing.taken
    limited = f"; stopped at --limit {choosing.limit}" if _limited(tally, choosing) else ""
    print(
        f"dry run: would {verb} {choosing.taken}, skip {skipped} (not chosen){limited}; "
        "nothing was changed",
        file=out,
    )
    _warn_of(tally, queue.name)
    return EXIT_FAILED if missing else EXIT_OK


def _report_not_found(choosing: Choosing, queue: str, out: TextIO) -> list[str]:
    missing = choosing.not_found()
    for message_id in missing:
        print(f"not found {_printable(message_id)}: no such dead letter in {queue}", file=out)
    return missing


def _limited(tally: Tally, choosing: Choosing) -> bool:
    """The limit stopped the command before every dead letter there was looked at."""
    return choosing.enough and tally.looked_at < tally.there


def _summary(done: str, tally: Tally, choosing: Choosing) -> str:
    skipped = tally.kept + len(tally.unpublishable)
    reasons = []
    if tally.kept:
        reasons.append(f"{tally.kept} not chosen")
    if tally.unpublishable:
        reasons.append(f"{len(tally.unpublishable)} cannot be republished")
    why = f" ({', '.join(reasons)}; still in the dead-letter queue)" if reasons else ""
    limited = ""
    if _limited(tally, choosing):
        left = tally.there - tally.looked_at
        limited = f"; stopped at --limit {choosing.limit}, {left} not looked at"
    return f"{done} {tally.removed}, skipped {skipped}{why}{limited}"


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

    def __init__(self, write: Callable[[str], object], *, buffered: int = WINDOW) -> None:
        self._write = write
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


class _Output:
    """Standard output, which its reader may close half-way (`list | head`): from then on
    nothing more is written, and the pass is told to stop, so the queue is left as it was
    rather than the command failing in the middle of it."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self.gone = False

    def line(self, text: str) -> None:
        if self.gone:
            return
        try:
            print(text, file=self._out, flush=True)
        except BrokenPipeError:
            self.gone = True
            _drop_what_is_buffered(self._out)


def _drop_what_is_buffered(out: TextIO) -> None:
    """Point `out` at /dev/null, so the interpreter's last flush at exit does not fail too."""
    try:
        descriptor = out.fileno()
    except (OSError, ValueError):
        return
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, descriptor)
    os.close(null)


# The AMQP properties `show` prints, in the protocol's order; `headers` has its own part.
PROPERTIES = ("content_type", "content_encoding", "delivery_mode", "priority", "correlation_id",
              "reply_to", "expiration", "message_id", "timestamp", "type", "user_id", "app_id",
              "cluster_id")  # fmt: skip


def _details(letter: ParkedMessage) -> list[str]:
    """`show`'s account of one dead letter: text that could hurt a terminal escaped."""
    lines = [f"id             {_printable(letter.id)}",
             f"dead-lettered  {_time(letter.dead_lettered_at)}",
             "properties"]  # fmt: skip
    for name in PROPERTIES:
        value = getattr(letter.properties, name, None)
        if value is not None:
            lines.append(f"  {name}: {_value(value)}")
    lines.append("headers")
    lines.extend(
        f"  {_printable(str(name))}: {_value(value)}" for name, value in letter.headers.items()
    )
    text = letter.body.decode("utf-8", "backslashreplace")
    lines.append(f"body ({len(letter.body)} bytes)")
    lines.extend(_printable(line) for line in text.split("\n"))
    return lines


def _value(value: object) -> str:
    """A property or header value on one line: text as it is, anything else as JSON."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "backslashreplace")
    if isinstance(value, str):
        return _printable(value)
    return _printable(json.dumps(value, default=str, ensure_ascii=False))


def _facts(letter: ParkedMessage) -> dict[str, str | None]:
    """What the table shows of one dead letter, and its PID, as one JSON object: text as it
    is (JSON escapes what a terminal should not see), null for what it does not say."""
    bucket, key = _bucket_and_key(letter.body)
    moment = letter.dead_lettered_at
    return {
        "id": letter.id,
        "dead_lettered_at": None if moment is None else _time(moment),
        "stage": letter.stage,
        "reason": letter.reason,
        "bucket": bucket,
        "key": key,
        "pid": letter.pid,
    }


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
    bucket, key = _bucket_and_key(body)
    if bucket is None and key is None:
        return "-"
    return _printable(f"{bucket or '-'}/{key or '-'}")


def _bucket_and_key(body: bytes) -> tuple[str | None, str | None]:
    """Bucket and key of the event's first record, each None where the body does not say."""
    try:
        message = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None, None
    records = message.get("Records") if isinstance(message, dict) else None
    record = records[0] if isinstance(records, list) and records else None
    s3 = record.get("s3") if isinstance(record, dict) else None
    return _field(s3, "bucket", "name"), _field(s3, "object", "key")


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

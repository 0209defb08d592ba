"""The `dead-letters` commands: the dead-letter queue as an operator sees it. Each is one
pass over the queue taking what a `Choosing` picks, and returns its exit status; the broker
or a queue not there comes out as `ServiceUnavailable` (`ReplayStopped` from a replay the
broker cut short), for the caller to say in one line."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import TextIO

from s3_events_handler.adapters.logs import with_fields
from s3_events_handler.adapters.rabbitmq.dead_letter_model import Tally, dead_letter_id
from s3_events_handler.adapters.rabbitmq.dead_letters import DeadLetterQueue, Heard
from s3_events_handler.adapters.rabbitmq.headers import ERROR_HEADER, text_of
from s3_events_handler.adapters.rabbitmq.settlement import Received
from s3_events_handler.application.replay import Choosing
from s3_events_handler.entrypoints.dead_letter_text import (
    Table,
    details,
    facts,
    json_line,
    object_of,
)
from s3_events_handler.entrypoints.exit_codes import ExitCode
from s3_events_handler.entrypoints.terminal import Output, complain, is_yes, printable

# Each dead letter `drop` removes, at INFO whatever level an operator command logs at
# otherwise (`REMOVALS_LOGGER`): who dropped what, and why it had been dead-lettered.
REMOVALS_LOGGER = "s3_events_handler.dead_letters.removals"
removals = logging.getLogger(REMOVALS_LOGGER)


def list_dead_letters(
    queue: DeadLetterQueue, out: TextIO, *, as_json: bool = False, limit: int | None = None
) -> int:
    """The dead letters, head of the queue first, each printed as it is read: a table, or
    with `as_json` one JSON object a line; at most `limit`. Every one stays in the
    queue. The closing count goes below the table, or to standard error after JSON lines.
    """
    output = Output(out)
    table = Table(output.line)
    choosing = Choosing(limit=limit)
    each: Heard = (lambda letter: output.line(json_line(letter))) if as_json else table.add
    tally = _walk(queue.browse, choosing, each, gone=lambda: output.gone)
    table.close()
    if output.gone:
        return ExitCode.OK  # the reader had enough (`| head`); the queue is as it was
    if tally.looked_at == 0:
        summary = f"no dead letters in {queue.name}"
    elif _limited(tally, choosing):
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
    return ExitCode.OK


def show_dead_letter(queue: DeadLetterQueue, letter_id: str, out: TextIO) -> int:
    """Properties, headers and body of the dead letter `letter_id` (of each, should several
    share it: the records of one split share its message_id). Every one stays in the queue."""
    output = Output(out)
    choosing = Choosing.by_ids([letter_id])

    def each(letter: Received) -> None:
        if choosing.taken > 1:
            output.line("")
        for line in details(letter):
            output.line(line)

    tally = _walk(queue.browse, choosing, each, gone=lambda: output.gone)
    _warn_of(tally, queue.name)
    if output.gone or choosing.taken:
        return ExitCode.OK
    complain(f"no dead letter {printable(letter_id)} in {queue.name} ({tally.looked_at} looked at)")
    return ExitCode.FAILED


def replay_dead_letters(
    queue: DeadLetterQueue, choosing: Choosing, *, dry_run: bool, out: TextIO
) -> int:
    """Move the chosen dead letters back to the incoming queue, one transaction each; with
    `dry_run`, only say which."""
    where = f"from {queue.name} to {queue.incoming_queue}"
    if not dry_run:
        print(f"replaying {where}", file=out, flush=True)
    return _remove(queue, queue.replay, choosing, f"replay {where}", "replayed", out,
                   dry_run=dry_run)  # fmt: skip


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
    if not (yes or dry_run):
        refused = _confirm(queue, what, stdin=stdin, err=err)
        if refused is not None:
            return refused
    if not dry_run:
        print(f"dropping from {queue.name}", file=out, flush=True)
    return _remove(queue, queue.drop, choosing, f"drop from {queue.name}", "dropped", out,
                   dry_run=dry_run, also=_log_removal)  # fmt: skip


def _walk(
    action: Callable[..., Tally],
    choosing: Choosing,
    then: Heard,
    *,
    gone: Callable[[], bool] = lambda: False,
) -> Tally:
    """`action` (browse, replay or drop) on what `choosing` takes, until it has enough or
    the reader of the output is `gone`; `then` hears of each taken."""
    return action(
        lambda letter: choosing.take(dead_letter_id(letter), text_of(letter.headers, ERROR_HEADER)),
        then,
        enough=lambda: choosing.enough or gone(),
    )


def _remove(
    queue: DeadLetterQueue,
    action: Callable[..., Tally],
    choosing: Choosing,
    would: str,
    done: str,
    out: TextIO,
    *,
    dry_run: bool,
    also: Callable[[Received, str], None] = lambda letter, queue: None,
) -> int:
    """`action` (a replay or a drop) on what `choosing` takes, a line for each dead letter
    once its removal is committed; with `dry_run`, the table of what it `would` take,
    changing nothing. Then what was not done and the count; exit 1 for anything asked
    for and not done (an id not there, a dead letter that cannot be republished)."""
    if dry_run:
        print(f"dry run: would {would}", file=out)
        table = Table(lambda line: print(line, file=out))
        tally = _walk(queue.browse, choosing, table.add)
        table.close()
    else:

        def removed(letter: Received) -> None:
            line = f"{done:<10}{printable(dead_letter_id(letter))}  {object_of(letter)}"
            print(line, file=out, flush=True)
            also(letter, queue.name)

        tally = _walk(action, choosing, removed)
    for letter_id, why in tally.unpublishable:
        print(f"skipped   {printable(letter_id)}: cannot be republished as it is: {why}", file=out)
    missing = choosing.not_found()
    for letter_id in missing:
        print(f"not found {printable(letter_id)}: no such dead letter in {queue.name}", file=out)
    print(_summary(tally, choosing, would.split()[0], done, dry_run=dry_run), file=out)
    _warn_of(tally, queue.name)
    return ExitCode.FAILED if tally.unpublishable or missing else ExitCode.OK


def _log_removal(letter: Received, queue: str) -> None:
    said = facts(letter)
    fields = {"dead_letter_id": said["id"], "reason": said["reason"], "stage": said["stage"],
              "queue": queue, "bucket": said["bucket"], "key": said["key"],
              "pid": said["pid"]}  # fmt: skip
    removals.info(
        "dropped dead letter %s from %s: %s",
        said["id"],
        queue,
        said["reason"] or "(no x-error)",
        extra=with_fields(fields),
    )


def _confirm(queue: DeadLetterQueue, what: str, *, stdin: TextIO, err: TextIO) -> int | None:
    """Ask on the terminal before a drop: None to go on, else the exit status (2 with no
    terminal to ask on, 1 for any answer but yes)."""
    try:
        on_a_terminal = stdin.isatty()
    except (OSError, ValueError):  # closed, or no descriptor: nobody to ask
        on_a_terminal = False
    if not on_a_terminal:
        print(
            "s3-events-handler: dead-letters drop removes dead letters for good: pass --yes "
            "to confirm (standard input is not a terminal to ask on)",
            file=err,
        )
        return ExitCode.SETTINGS
    print(
        f"Drop {what} from {queue.name} ({queue.depth()} dead letter(s) there now)? "
        "Nothing brings them back. [y/N] ",
        end="",
        file=err,
        flush=True,
    )
    try:
        answer = stdin.readline()
    except KeyboardInterrupt:  # Ctrl-C answers nothing at all, as the end of input does
        answer = ""
    if is_yes(answer):
        return None
    print("\nnothing dropped" if not answer else "nothing dropped", file=err)
    return ExitCode.FAILED


def _limited(tally: Tally, choosing: Choosing) -> bool:
    """The limit stopped the command before every dead letter there was looked at."""
    return choosing.enough and tally.looked_at < tally.there


def _summary(tally: Tally, choosing: Choosing, verb: str, done: str, *, dry_run: bool) -> str:
    limited = _limited(tally, choosing)
    if dry_run:
        stopped = f"; stopped at --limit {choosing.limit}" if limited else ""
        return (
            f"dry run: would {verb} {choosing.taken}, skip {tally.looked_at - choosing.taken} "
            f"(not chosen){stopped}; nothing was changed"
        )
    reasons = []
    if tally.kept:
        reasons.append(f"{tally.kept} not chosen")
    if tally.unpublishable:
        reasons.append(f"{len(tally.unpublishable)} cannot be republished")
    why = f" ({', '.join(reasons)}; still in the dead-letter queue)" if reasons else ""
    if limited:
        left = tally.there - tally.looked_at
        why = f"{why}; stopped at --limit {choosing.limit}, {left} not looked at"
    return f"{done} {tally.removed}, skipped {tally.kept + len(tally.unpublishable)}{why}"


def _warn_of(tally: Tally, queue: str) -> None:
    """On standard error, what the pass could not do as it should."""
    for letter_id, why in tally.out_of_place:
        complain(
            f"dead letter {printable(letter_id)} could not be put back in its place (AMQP "
            f"cannot carry it again as it is: {why}); it is at the head of {queue}"
        )
    if tally.short:
        complain(
            f"{queue} held fewer dead letters than when this began ({tally.there}); "
            "something else took some meanwhile"
        )

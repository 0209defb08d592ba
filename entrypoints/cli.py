"""The `s3-events-handler` command: its arguments, and which code each command runs."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from s3_events_handler.adapters.config import ConfigError
from s3_events_handler.adapters.rabbitmq.connection import BrokerCertificateError, check_certificate
from s3_events_handler.adapters.rabbitmq.dead_letter_model import ReplayStopped
from s3_events_handler.adapters.rabbitmq.dead_letters import DeadLetterQueue
from s3_events_handler.application.replay import Choosing
from s3_events_handler.domain.errors import ServiceUnavailable
from s3_events_handler.entrypoints.arguments import (
    add_command,
    choice_arguments,
    config_option,
    non_empty,
    positive,
)
from s3_events_handler.entrypoints.check_config import check_config
from s3_events_handler.entrypoints.command_help import (
    CHECK_CONFIG_HELP,
    CONSUME_HELP,
    DEAD_LETTERS_HELP,
    DEMO_HELP,
    DROP_HELP,
    LIST_HELP,
    PROCESS_HELP,
    REPLAY_HELP,
    SHOW_HELP,
)
from s3_events_handler.entrypoints.container import Container, build_container, package_version
from s3_events_handler.entrypoints.dead_letters import (
    REMOVALS_LOGGER,
    drop_dead_letters,
    list_dead_letters,
    replay_dead_letters,
    show_dead_letter,
)
from s3_events_handler.entrypoints.demo import run_demo
from s3_events_handler.entrypoints.exit_codes import MEANINGS, ExitCode
from s3_events_handler.entrypoints.reconcile import RECONCILE_HELP
from s3_events_handler.entrypoints.reconcile import add_arguments as reconcile_arguments
from s3_events_handler.entrypoints.reconcile import ready as ready_to_reconcile
from s3_events_handler.entrypoints.reconcile import run as run_reconcile
from s3_events_handler.entrypoints.service import cannot_read, consume, process, start
from s3_events_handler.entrypoints.terminal import PROG, complain, stop_writing

# -- running a command ---------------------------------------------------------------------


def _configured_for_the_broker(config_path: Path) -> Container:
    """Settings loaded, nothing opened, and the broker's certificate verified as `consume`
    verifies it at its start."""
    container = build_container(config_path, quiet=True)
    check_certificate(container.broker_settings())
    return container


def _on(
    config_path: Path, ready: Callable[[Path], Container], command: Callable[[Container], int]
) -> int:
    """`command` on the container `ready` makes: `start` (the service),
    `_configured_for_the_broker` or the reconcile module's `ready`. A broker certificate
    never accepted is a setting to fix (exit 2), not an outage."""
    try:
        container = ready(config_path)
    except (ConfigError, BrokerCertificateError, OSError) as error:
        complain(f"cannot start: {error}")
        return ExitCode.SETTINGS
    try:
        return command(container)
    finally:
        container.shutdown_resources()


def _run_process(args: argparse.Namespace) -> int:
    if args.file != "-":
        try:  # before the start, which opens the ledger: a mistyped name touches nothing
            Path(args.file).open("rb").close()
        except OSError as error:
            return cannot_read(args.file, error)
    # `process` writes its outcome on standard output: its log goes to standard error.
    start_logging_aside = functools.partial(start, log_to=sys.stderr)
    return _on(args.config, start_logging_aside, lambda container: process(container, args.file))


def _on_the_dead_letters(args: argparse.Namespace) -> int:
    """The `dead-letters` action on the queue, with the settings and no resources opened;
    the broker or a queue failing it is one line and exit 1."""
    action: Callable[[DeadLetterQueue, argparse.Namespace], int] = args.on_queue

    def on(container: Container) -> int:
        if logging.getLevelNamesMapping()[container.settings().log_level] <= logging.INFO:
            # An operator command logs warnings only (`build_container(quiet=True)`); each
            # removal `drop` makes is logged all the same, unless LOG_LEVEL asks for less.
            logging.getLogger(REMOVALS_LOGGER).setLevel(logging.INFO)
        try:
            return action(container.dead_letter_queue(), args)
        except (ServiceUnavailable, ReplayStopped) as error:
            complain(str(error))
            return ExitCode.FAILED

    return _on(args.config, _configured_for_the_broker, on)


def _drop(queue: DeadLetterQueue, args: argparse.Namespace) -> int:
    choosing, what = _chosen(args)
    return drop_dead_letters(queue, choosing, what=what, yes=args.yes, dry_run=args.dry_run,
                             out=sys.stdout, stdin=sys.stdin, err=sys.stderr)  # fmt: skip


def _chosen(args: argparse.Namespace) -> tuple[Choosing, str]:
    """What `replay` or `drop` was told to take, and that in words (for `drop`'s question)."""
    limit = args.limit
    if args.ids:
        choosing = Choosing.by_ids(args.ids, limit=limit)
        what = f"the dead letter(s) with id {', '.join(args.ids)}"
    elif args.reason is not None:
        choosing = Choosing.by_reason_text(args.reason, limit=limit)
        what = f"the dead letters whose x-error contains {args.reason!r} (any case)"
    elif args.reason_regex is not None:
        choosing = Choosing.by_reason_pattern(args.reason_regex, limit=limit)
        what = f"the dead letters whose x-error matches /{args.reason_regex}/"
    else:
        choosing = Choosing(limit=limit)
        what = "every dead letter"
    if limit is not None:
        what = f"{what}, at most the first {limit},"
    return choosing, what


# -- arguments -----------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    statuses = "\n".join(f"  {code.value:<4}{MEANINGS[code]}" for code in ExitCode)
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Archive objects landing in S3 in MediaHaven, and remove them when deleted.",
        epilog=(
            f"Each command has its own help: {PROG} COMMAND --help\n\n"
            f"exit status (each command's help says what its own mean):\n{statuses}\n"
            'every command\'s, in one table: docs/operations.md, "Exit statuses"'
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {package_version()}")
    config_option(parser, default=Path(os.environ.get("CONFIG_PATH", "config.yml")))
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_command(commands, "consume", "consume S3 events until stopped", CONSUME_HELP,
                run=lambda args: _on(args.config, start, consume))  # fmt: skip
    one = add_command(commands, "process", "run one event through the service", PROCESS_HELP,
                      run=_run_process)  # fmt: skip
    one.add_argument("file", help="a file holding the event JSON, or - for standard input")
    add_command(commands, "demo", "run the example events on in-memory adapters", DEMO_HELP,
                reads_settings=False, run=lambda args: run_demo(sys.stdout))  # fmt: skip
    add_command(commands, "check-config", "check settings and every system, read-only",
                CHECK_CONFIG_HELP,
                run=lambda args: check_config(args.config, sys.stdout))  # fmt: skip
    dead = add_command(commands, "dead-letters", "list, show, replay or drop dead letters",
                       DEAD_LETTERS_HELP, run=_on_the_dead_letters)  # fmt: skip
    actions = dead.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = add_command(
        actions, "list", "list the dead letters, leaving them in place", LIST_HELP,
        on_queue=lambda queue, args: list_dead_letters(
            queue, sys.stdout, as_json=args.json, limit=args.limit
        ),
    )  # fmt: skip
    listing.add_argument(
        "--json", action="store_true",
        help="one JSON object a line instead of the table (id, dead_lettered_at, stage, reason,"
        " bucket, key, pid; null where the dead letter does not say), the count on standard error",
    )  # fmt: skip
    listing.add_argument(
        "--limit", metavar="N", type=positive,
        help="stop after the first N (head first): up to 100 are read in place, nothing rewritten",
    )  # fmt: skip
    show = add_command(
        actions, "show", "print the headers and body of one dead letter", SHOW_HELP,
        on_queue=lambda queue, args: show_dead_letter(queue, args.id, sys.stdout),
    )  # fmt: skip
    show.add_argument("id", metavar="ID", type=non_empty, help="its id, as listed")
    replay = add_command(
        actions, "replay", "move dead letters back to the incoming queue", REPLAY_HELP,
        on_queue=lambda queue, args: replay_dead_letters(
            queue, _chosen(args)[0], dry_run=args.dry_run, out=sys.stdout
        ),
    )  # fmt: skip
    choice_arguments(replay, "replayed")
    drop = add_command(actions, "drop", "remove dead letters for good", DROP_HELP, on_queue=_drop)
    choice_arguments(drop, "dropped")
    drop.add_argument(
        "--yes", action="store_true",
        help="do it without asking; needed when standard input is not a terminal (a script,"
        " a pipe)",
    )  # fmt: skip
    reconcile = add_command(
        commands, "reconcile", "compare a bucket with the archive; send back what is missing",
        RECONCILE_HELP, run=lambda args: _on(
            args.config, ready_to_reconcile, functools.partial(run_reconcile, args)
        ),
    )  # fmt: skip
    reconcile_arguments(reconcile, positive)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        try:
            args = parser().parse_args(argv)
            check: Callable[[argparse.Namespace], None] | None = getattr(args, "check", None)
            if check is not None:
                check(args)
            run: Callable[[argparse.Namespace], int] = args.run
            return run(args)
        finally:  # after the command, --help, --version or a usage error alike: now, not at the
            # interpreter's exit, where a reader gone away could not be caught
            sys.stdout.flush()
    except BrokenPipeError:
        # Standard output's reader went away (`demo | head -1`): stop without a traceback,
        # as a program stopped by SIGPIPE does.
        stop_writing(sys.stdout)
        return ExitCode.BROKEN_PIPE

"""The `s3-events-handler` command: its arguments, and which code each command runs."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import re
import signal
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from s3_events_handler.adapters.config import ConfigError
from s3_events_handler.adapters.cpu_affinity import pin_to_one_cpu
from s3_events_handler.adapters.rabbitmq import BrokerCertificateError, describe
from s3_events_handler.application.messages import DeadLetter, Delivery, Done, Outcome, Retry, Split
from s3_events_handler.application.replay import Choosing, Selection
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
from s3_events_handler.entrypoints.container import Container, build_container
from s3_events_handler.entrypoints.dead_letters import (
    REMOVALS_LOGGER,
    drop_dead_letters,
    list_dead_letters,
    replay_dead_letters,
    show_dead_letter,
)
from s3_events_handler.entrypoints.demo import run_demo
from s3_events_handler.entrypoints.exit_codes import ExitCode, summary
from s3_events_handler.entrypoints.reconcile import RECONCILE_HELP
from s3_events_handler.entrypoints.reconcile import add_arguments as reconcile_arguments
from s3_events_handler.entrypoints.reconcile import run as run_reconcile

log = logging.getLogger("s3-events-handler")


def start(config_path: Path, *, log_to: TextIO | None = None) -> Container:
    """`build_container`, the destination table read and the resources opened (the ledger
    among them); raises `ConfigError`, with whatever was opened closed again.

    A bad table or ledger, or a broker certificate that cannot be verified, stops the
    start, not the first event; all are checked before anything is logged, so a failed
    start says one thing.
    """
    container = build_container(config_path, log_to=log_to)
    try:
        destinations = container.destinations()
        check_broker_certificate(container)
        container.init_resources()
    except BaseException:
        container.shutdown_resources()
        raise
    log.info(
        "destination folders for %s (default %s): %s",
        container.config.app.environment(),
        destinations.default_folder,
        dict(destinations.folders),
    )
    return container


def check_broker_certificate(container: Container) -> None:
    """With RABBIT_MQ_SSL, a certificate the service will never accept is a setting to fix:
    without this, the consumer would reconnect forever as if the broker were down."""
    try:
        container.broker().check_certificate()
    except BrokerCertificateError as error:
        raise ConfigError([], [str(error)]) from None


def consume(container: Container) -> int:
    if container.config.app.pin_cpu():
        pin_to_one_cpu()  # before the workers start: they run where their parent does
    return _consume(container)


def _consume(container: Container) -> int:
    consumer = container.consumer()
    status = container.status_server()
    try:
        status.start()  # before the broker: the probes answer while it connects
    except OSError as error:
        print(
            f"s3-events-handler: cannot start: METRICS_PORT={status.port}: {error}", file=sys.stderr
        )
        return ExitCode.SETTINGS

    def stop(signum: int, frame: FrameType | None) -> None:
        log.info("received %s: finishing the messages in hand", signal.Signals(signum).name)
        consumer.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        consumer.run(grace_seconds=container.config.app.shutdown_grace_seconds())
    finally:
        status.stop()
    log.info("stopped")
    return ExitCode.OK


def process(container: Container, source: str) -> int:
    """Run one event through the application against the configured services."""
    try:
        body = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as error:
        return _cannot_read(source, error)
    broker = container.broker()
    try:
        broker.open()
    except Exception as error:  # nothing was done yet: say so plainly and let the caller retry
        settings = broker.settings
        reason = describe(error, settings.password)
        where = f"{settings.host}:{settings.port}"
        print(f"s3-events-handler: cannot reach the broker at {where}: {reason}", file=sys.stderr)
        return ExitCode.TEMPFAIL
    return _report(container.handler().handle, Delivery(body=body))


def _report(handle: Any, delivery: Delivery) -> int:
    outcome: Outcome = handle(delivery)
    if isinstance(outcome, Split):
        return max(_report(handle, Delivery(body=body)) for body in outcome.bodies)
    print(json.dumps(_as_json(outcome), ensure_ascii=False))
    if isinstance(outcome, Done):
        return ExitCode.OK
    return ExitCode.TEMPFAIL if isinstance(outcome, Retry) else ExitCode.FAILED


def _as_json(outcome: Done | Retry | DeadLetter) -> dict[str, Any]:
    if isinstance(outcome, Done):
        return {"outcome": "done", "result": outcome.result.kind, "summary": outcome.summary}
    if isinstance(outcome, Retry):
        return {"outcome": "retry", "reason": outcome.reason, "delay": outcome.delay_seconds}
    return {"outcome": "dead-letter", "reason": outcome.reason, "stage": outcome.stage}


# -- running a command ---------------------------------------------------------------------


def _configured(config_path: Path) -> Container:
    """Settings loaded and logging set up, nothing opened: for an operator command."""
    return build_container(config_path, quiet=True)


def _configured_for_the_broker(config_path: Path) -> Container:
    """`_configured`, and the broker's certificate verified: one that never will be is a
    setting to fix (exit 2), as for `consume` and `check-config`, not an outage."""
    container = _configured(config_path)
    check_broker_certificate(container)
    return container


def _on(
    config_path: Path, ready: Callable[[Path], Container], command: Callable[[Container], int]
) -> int:
    """`command` on the container `ready` makes: `start` (the service) or `_configured`."""
    try:
        container = ready(config_path)
    except (ConfigError, OSError) as error:
        print(f"s3-events-handler: cannot start: {error}", file=sys.stderr)
        return ExitCode.SETTINGS
    try:
        return command(container)
    finally:
        container.shutdown_resources()


def _run_consume(args: argparse.Namespace) -> int:
    return _on(args.config, start, consume)


def _run_process(args: argparse.Namespace) -> int:
    if args.file != "-":
        try:  # before the start, which opens the ledger: a mistyped name touches nothing
            Path(args.file).open("rb").close()
        except OSError as error:
            return _cannot_read(args.file, error)
    # `process` writes its outcome on standard output: its log goes to standard error.
    start_logging_aside = functools.partial(start, log_to=sys.stderr)
    return _on(args.config, start_logging_aside, lambda container: process(container, args.file))


def _cannot_read(source: str, error: OSError) -> int:
    print(f"s3-events-handler: cannot read {source}: {error.strerror}", file=sys.stderr)
    return ExitCode.SETTINGS


def _run_demo(args: argparse.Namespace) -> int:
    return run_demo(sys.stdout)


def _run_check_config(args: argparse.Namespace) -> int:
    return check_config(args.config, sys.stdout)


def _run_dead_letters_list(args: argparse.Namespace) -> int:
    def list_them(container: Container) -> int:
        return list_dead_letters(
            container.dead_letter_queue(), sys.stdout, as_json=args.json, limit=args.limit
        )

    return _on(args.config, _configured_for_the_broker, list_them)


def _run_dead_letters_show(args: argparse.Namespace) -> int:
    def show_it(container: Container) -> int:
        return show_dead_letter(container.dead_letter_queue(), args.id, sys.stdout)

    return _on(args.config, _configured_for_the_broker, show_it)


def _choosing(args: argparse.Namespace) -> Choosing:
    """What `replay` or `drop` was told to take."""
    if args.ids:
        selection = Selection.by_ids(args.ids)
    elif args.reason is not None:
        selection = Selection.by_reason_text(args.reason)
    elif args.reason_regex is not None:
        selection = Selection.by_reason_pattern(args.reason_regex)
    else:
        selection = Selection.everything()
    return Choosing(selection, limit=args.limit)


def _run_dead_letters_replay(args: argparse.Namespace) -> int:
    choosing = _choosing(args)

    def replay(container: Container) -> int:
        return replay_dead_letters(
            container.dead_letter_queue(),
            choosing,
            incoming_queue=container.broker_settings().incoming_queue,
            dry_run=args.dry_run,
            out=sys.stdout,
        )

    return _on(args.config, _configured_for_the_broker, replay)


def _run_dead_letters_drop(args: argparse.Namespace) -> int:
    choosing = _choosing(args)

    def drop(container: Container) -> int:
        if logging.getLevelNamesMapping()[container.config.logging.level()] <= logging.INFO:
            # An operator command logs warnings only (`build_container(quiet=True)`); each
            # removal is logged all the same, unless LOG_LEVEL asks for less than INFO.
            logging.getLogger(REMOVALS_LOGGER).setLevel(logging.INFO)
        return drop_dead_letters(
            container.dead_letter_queue(),
            choosing,
            what=_what(args),
            yes=args.yes,
            dry_run=args.dry_run,
            out=sys.stdout,
            stdin=sys.stdin,
            err=sys.stderr,
        )

    return _on(args.config, _configured_for_the_broker, drop)


def _what(args: argparse.Namespace) -> str:
    """The dead letters `drop` was told to take, in words, for its question."""
    if args.ids:
        what = f"the dead letter(s) with id {', '.join(args.ids)}"
    elif args.reason is not None:
        what = f"the dead letters whose x-error contains {args.reason!r} (any case)"
    elif args.reason_regex is not None:
        what = f"the dead letters whose x-error matches /{args.reason_regex}/"
    else:
        what = "every dead letter"
    return what if args.limit is None else f"{what}, at most the first {args.limit},"


# -- arguments -----------------------------------------------------------------------------

PROG = "s3-events-handler"


def _package_version() -> str:
    try:
        return version("s3-events-handler")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _non_empty(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def _positive(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return number


def _pattern(text: str) -> str:
    try:
        re.compile(_non_empty(text))
    except re.error as error:
        raise argparse.ArgumentTypeError(f"not a regular expression: {error}") from None
    return text


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Archive objects landing in S3 in MediaHaven, and remove them when deleted.",
        epilog=(
            f"Each command has its own help: {PROG} COMMAND --help\n\n"
            f"exit status (each command's help says what its own mean):\n{summary()}\n"
            'every command\'s, in one table: docs/operations.md, "Exit statuses"'
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {_package_version()}")
    parser.add_argument(
        "--config",
        type=Path,
        default=Path(os.environ.get("CONFIG_PATH", "config.yml")),
        help="settings structure (default: $CONFIG_PATH or ./config.yml)",
    )
    # The same option after the command; SUPPRESS keeps the value given before it, if any.
    config_after = argparse.ArgumentParser(add_help=False)
    config_after.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help="settings structure (default: $CONFIG_PATH or ./config.yml)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        group: Any,
        name: str,
        summary: str,
        text: str,
        run: Callable[[argparse.Namespace], int] | None = None,
        *,
        reads_settings: bool = True,
    ) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = group.add_parser(
            name,
            parents=[config_after] if reads_settings else [],
            help=summary,
            description=text,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if run is not None:
            sub.set_defaults(run=run)
        return sub

    command(commands, "consume", "consume S3 events until stopped", CONSUME_HELP, _run_consume)
    one = command(
        commands, "process", "run one event through the service", PROCESS_HELP, _run_process
    )
    one.add_argument("file", help="a file holding the event JSON, or - for standard input")
    command(
        commands,
        "demo",
        "run the example events on in-memory adapters",
        DEMO_HELP,
        _run_demo,
        reads_settings=False,
    )
    command(
        commands,
        "check-config",
        "check settings and every system, read-only",
        CHECK_CONFIG_HELP,
        _run_check_config,
    )
    dead = command(
        commands, "dead-letters", "list, show, replay or drop dead letters", DEAD_LETTERS_HELP
    )
    actions = dead.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = command(
        actions,
        "list",
        "list the dead letters, leaving them in place",
        LIST_HELP,
        _run_dead_letters_list,
    )
    listing.add_argument(
        "--json", action="store_true", help="one JSON object a line instead of the table"
    )
    listing.add_argument(
        "--limit", metavar="N", type=_positive, help="stop after the first N (head first)"
    )
    show = command(
        actions,
        "show",
        "print the headers and body of one dead letter",
        SHOW_HELP,
        _run_dead_letters_show,
    )
    show.add_argument("id", metavar="ID", type=_non_empty, help="its id, as listed")
    replay = command(
        actions,
        "replay",
        "move dead letters back to the incoming queue",
        REPLAY_HELP,
        _run_dead_letters_replay,
    )
    _choice_arguments(replay, "replayed")
    drop = command(
        actions,
        "drop",
        "remove dead letters for good",
        DROP_HELP,
        _run_dead_letters_drop,
    )
    _choice_arguments(drop, "dropped")
    drop.add_argument(
        "--yes", action="store_true", help="do it without asking (needed without a terminal)"
    )
    reconcile = command(
        commands,
        "reconcile",
        "compare a bucket with the archive; send back what is missing",
        RECONCILE_HELP,
        run_reconcile,
    )
    reconcile_arguments(reconcile, _positive)
    return parser


def _choice_arguments(sub: argparse.ArgumentParser, done: str) -> None:
    """How `replay` and `drop` are told which dead letters: one way, never all by default."""
    chosen = sub.add_mutually_exclusive_group(required=True)
    chosen.add_argument("--all", action="store_true", help="every dead letter")
    chosen.add_argument(
        "--id", dest="ids", action="append", metavar="ID", type=_non_empty,
        help="the dead letter with this id (as listed); repeat for more",
    )  # fmt: skip
    chosen.add_argument(
        "--reason", metavar="TEXT", type=_non_empty,
        help="those whose x-error contains TEXT, in any case",
    )  # fmt: skip
    chosen.add_argument(
        "--reason-regex", metavar="PATTERN", type=_pattern,
        help="those whose x-error matches the regular expression PATTERN (searched)",
    )  # fmt: skip
    sub.add_argument(
        "--limit", metavar="N", type=_positive,
        help="at most the first N of those chosen (head first); not with --id",
    )  # fmt: skip
    sub.add_argument(
        "--dry-run", action="store_true", help=f"list what would be {done}; change nothing"
    )
    sub.set_defaults(check=_limit_not_with_ids(sub))


def _limit_not_with_ids(sub: argparse.ArgumentParser) -> Callable[[argparse.Namespace], None]:
    def check(args: argparse.Namespace) -> None:
        if args.limit is not None and args.ids:
            sub.error("--limit goes with --all, --reason or --reason-regex: ids say which")

    return check


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        return _output_closed()


def _main(argv: Sequence[str] | None) -> int:
    try:
        args = parser().parse_args(argv)
        check: Callable[[argparse.Namespace], None] | None = getattr(args, "check", None)
        if check is not None:
            check(args)
    except SystemExit:  # --help, --version, a usage error: their output is flushed below too
        sys.stdout.flush()
        raise
    run: Callable[[argparse.Namespace], int] = args.run
    status = run(args)
    # Now, not at the interpreter's exit, where a reader gone away could not be caught.
    sys.stdout.flush()
    return status


def _output_closed() -> int:
    """Standard output's reader went away (`demo | head -1`): stop without a traceback, as
    a program stopped by SIGPIPE does. Anything still buffered goes to /dev/null, so the
    interpreter's own flush at the exit does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return ExitCode.BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())

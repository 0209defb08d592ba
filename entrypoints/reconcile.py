"""The `reconcile` command (contract §8): a bucket compared with the archive, what is missing
printed and, when asked, sent back through the normal path."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from s3_events_handler.adapters.config import S3_NEEDED, ConfigError
from s3_events_handler.adapters.rabbitmq.incoming_events import AmqpIncomingEvents
from s3_events_handler.application.limits import ConsumerLedger
from s3_events_handler.application.reasons import one_line
from s3_events_handler.application.reconciling import DEFAULT_RATE, RateLimit, ReconcileBucket
from s3_events_handler.domain.bucket import Reconciled
from s3_events_handler.domain.errors import BadInput, Rejected, ServiceUnavailable
from s3_events_handler.domain.rules import normalise_or_id
from s3_events_handler.entrypoints.container import Container, build_container
from s3_events_handler.entrypoints.exit_codes import ExitCode
from s3_events_handler.entrypoints.reconcile_output import Report
from s3_events_handler.entrypoints.terminal import complain

INSTALL_HINT = "pip install 's3-events-handler[reconcile]'"
DEFAULT_OLDER_THAN = "1h"
_DURATION = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}

RECONCILE_HELP = f"""\
List a bucket through the S3 API and give each object (modified before --older-than) one
state: archived (MediaHaven has a record with exactly this bucket and key), in flight
(the ledger sent its transfer request, MediaHaven has not ingested it yet) or missing.
Prints one line per object that is not archived, then a summary on standard error.
With --enqueue, each missing object goes back to the incoming queue as an
ObjectCreated:Put event, request id reconcile-<eTag>: enqueued twice, it is one event.

It cannot see what is no longer in the bucket: an object deleted before it ran, a
record whose object is gone (docs/operations.md, "Reconcile").

settings: S3_ENDPOINT_URL, S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY, S3_REGION (default
us-east-1), S3_DOMAIN (default s3), beside the service's own (MediaHaven, the ledger,
the broker with --enqueue, CONCURRENCY look-ups at once). Needs boto3:
  {INSTALL_HINT}

exit status: 0 nothing missing, 1 something missing, 2 settings or arguments wrong,
75 a system stopped answering (what was found so far is printed; nothing is published
after that point)

examples:
  s3-events-handler reconcile --bucket mam-highresvideo --prefix 2026/ --json
  s3-events-handler reconcile --bucket mam-highresvideo --enqueue --tenant OR-rf5kf25
"""


def duration(text: str) -> timedelta:
    """`30m`, `2d`, `0s`: a whole number and one of s, m, h, d."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"not a duration (a whole number and one of s, m, h, d: 30m, 2d): {text!r}"
        )
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def tenant(text: str) -> str:
    try:
        return normalise_or_id(text)
    except BadInput as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"not a number of look-ups a second above 0: {text!r}")
    return value


def add_arguments(sub: argparse.ArgumentParser, positive: Callable[[str], int]) -> None:
    sub.add_argument("--bucket", required=True, metavar="NAME", help="the bucket to list")
    sub.add_argument("--prefix", default="", metavar="P", help="only keys that start with P")
    sub.add_argument(
        "--older-than", type=duration, default=duration(DEFAULT_OLDER_THAN), metavar="DURATION",
        help=f"leave out objects modified more recently (default {DEFAULT_OLDER_THAN})",
    )  # fmt: skip
    sub.add_argument("--json", action="store_true", help="one JSON object a line")
    sub.add_argument("--limit", type=positive, metavar="N", help="look at the first N objects")
    sub.add_argument(
        "--rate", type=rate, default=DEFAULT_RATE, metavar="R",
        help=f"at most R MediaHaven look-ups a second (default {DEFAULT_RATE:g})",
    )  # fmt: skip
    sub.add_argument(
        "--enqueue", action="store_true", help="send each missing object back (needs --tenant)"
    )
    sub.add_argument("--tenant", type=tenant, metavar="OR-ID", help="the bucket's OR-id")

    def check(args: argparse.Namespace) -> None:
        if args.enqueue and args.tenant is None:
            sub.error("--enqueue needs --tenant: the OR-id the events carry")
        if args.tenant is not None and not args.enqueue:
            sub.error("--tenant goes with --enqueue")
        if not args.bucket:
            sub.error("--bucket must not be empty")

    sub.set_defaults(check=check)


def ready(config_path: Path) -> Container:
    """The settings `reconcile` needs, the S3 API's among them, read; nothing opened."""
    return build_container(config_path, quiet=True, needs=S3_NEEDED)


def run(args: argparse.Namespace, container: Container) -> int:
    """`reconcile` on the container `ready` made: the adapters, the report, the status."""
    settings = container.settings()
    try:
        from s3_events_handler.adapters.s3_objects import S3BucketObjects
    except ImportError as error:
        complain(f"cannot start: reconcile needs boto3 ({error.name} is missing): {INSTALL_HINT}")
        return ExitCode.SETTINGS
    listing = S3BucketObjects(settings.s3, connections=settings.concurrency)
    try:
        ledger = _consumers_ledger(container)
        use_case = ReconcileBucket(
            objects=listing,
            records=container.records(),
            ledger=ledger,
            clock=lambda: datetime.now(UTC),
            events=AmqpIncomingEvents(container.broker()) if args.enqueue else None,
            domain=settings.s3.domain,
        )
        results = use_case.execute(
            args.bucket,
            prefix=args.prefix,
            older_than=args.older_than,
            tenant=args.tenant,
            limit=args.limit,
            workers=settings.concurrency,
            rate=RateLimit(args.rate),
        )
        report = Report(sys.stdout, sys.stderr, as_json=args.json, enqueue=args.enqueue)
        where = f"{args.bucket} under {args.prefix!r}" if args.prefix else args.bucket
        return _reported(results, report, where)
    except ConfigError as error:
        complain(f"cannot start: {error}")
        return ExitCode.SETTINGS
    finally:
        listing.close()


def _consumers_ledger(container: Container) -> ConsumerLedger:
    """The ledger the consumer writes, opened. A SQLite file that is not there would be made
    anew, empty, and every object sent would look missing: that is a setting to fix."""
    path, dsn = container.settings().ledger.path, container.settings().ledger.dsn
    if not dsn and not Path(path).is_file():
        raise ConfigError.of(
            f"LEDGER_PATH: no ledger at {path}; reconcile reads the consumer's "
            "(run it where that file is, or set LEDGER_DSN)"
        )
    ledger: ConsumerLedger = container.ledger()  # open_ledger's: its type is lost in `closing`
    return ledger


def _reported(results: Iterator[Reconciled], report: Report, where: str) -> int:
    """Each result printed as it comes; the summary whatever happens; the status."""
    try:
        for result in results:
            report.add(result)
    except ServiceUnavailable as error:
        report.close(where)
        complain(f"reconcile stopped, a system did not answer: {one_line(str(error))}")
        return ExitCode.TEMPFAIL
    except Rejected as error:
        report.close(where)
        complain(f"reconcile stopped: {one_line(str(error))}")
        return ExitCode.SETTINGS
    report.close(where)
    return ExitCode.FAILED if report.missing else ExitCode.OK

"""The `s3-events-handler` command: consume, process one event, or run the demo."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from s3_events_handler.adapters.config import ConfigError, load_config
from s3_events_handler.adapters.ledger_postgres import password_in
from s3_events_handler.adapters.logs import configure_logging
from s3_events_handler.adapters.rabbitmq import describe
from s3_events_handler.application.messages import DeadLetter, Delivery, Done, Outcome, Retry, Split
from s3_events_handler.entrypoints.container import Container
from s3_events_handler.entrypoints.demo import run_demo

log = logging.getLogger("s3-events-handler")

EXIT_CONFIG = 2
EXIT_DEAD_LETTER = 1
EXIT_RETRY_LATER = 75  # EX_TEMPFAIL


def secrets_of(settings: dict[str, Any]) -> list[str]:
    dsn = settings["ledger"]["dsn"]
    return [
        settings["rabbitmq"]["passwd"],
        settings["mediahaven"]["api"]["client_secret"],
        settings["mediahaven"]["api"]["passwd"],
        settings["mediahaven"]["ftp"]["passwd"],
        *([dsn, password_in(dsn) or ""] if dsn else []),
    ]


def build_container(config_path: Path) -> Container:
    """Settings loaded and checked, logging set up; raises `ConfigError`."""
    settings = load_config(config_path, os.environ)
    configure_logging(
        settings["logging"]["level"], settings["logging"]["format"], secrets_of(settings)
    )
    container = Container()
    container.config.from_dict(settings)
    return container


def start(config_path: Path) -> Container:
    """`build_container`, the destination table read and the resources opened (the ledger
    among them); raises `ConfigError`, with whatever was opened closed again.

    A bad table or ledger stops the start, not the first event; both are checked before
    anything is logged, so a failed start says one thing.
    """
    container = build_container(config_path)
    try:
        destinations = container.destinations()
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


def consume(container: Container) -> int:
    consumer = container.consumer()
    status = container.status_server()
    try:
        status.start()  # before the broker: the probes answer while it connects
    except OSError as error:
        print(
            f"s3-events-handler: cannot start: METRICS_PORT={status.port}: {error}", file=sys.stderr
        )
        return EXIT_CONFIG

    def stop(signum: int, frame: FrameType | None) -> None:
        log.info("received %s: finishing the message in hand", signal.Signals(signum).name)
        consumer.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        consumer.run(grace_seconds=container.config.app.shutdown_grace_seconds())
    finally:
        status.stop()
    log.info("stopped")
    return 0


def process(container: Container, source: str) -> int:
    """Run one event through the application against the configured services."""
    body = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    broker = container.broker()
    try:
        broker.open()
    except Exception as error:  # nothing was done yet: say so plainly and let the caller retry
        settings = broker.settings
        reason = describe(error, settings.password)
        where = f"{settings.host}:{settings.port}"
        print(f"s3-events-handler: cannot reach the broker at {where}: {reason}", file=sys.stderr)
        return EXIT_RETRY_LATER
    return _report(container.handler().handle, Delivery(body=body))


def _report(handle: Any, delivery: Delivery) -> int:
    outcome: Outcome = handle(delivery)
    if isinstance(outcome, Split):
        return max(_report(handle, Delivery(body=body)) for body in outcome.bodies)
    print(json.dumps(_as_json(outcome), ensure_ascii=False))
    if isinstance(outcome, Done):
        return 0
    return EXIT_RETRY_LATER if isinstance(outcome, Retry) else EXIT_DEAD_LETTER


def _as_json(outcome: Done | Retry | DeadLetter) -> dict[str, Any]:
    if isinstance(outcome, Done):
        return {"outcome": "done", "result": outcome.result.kind, "summary": outcome.summary}
    if isinstance(outcome, Retry):
        return {"outcome": "retry", "reason": outcome.reason, "delay": outcome.delay_seconds}
    return {"outcome": "dead-letter", "reason": outcome.reason, "stage": outcome.stage}


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="s3-events-handler",
        description="Archive objects landing in S3 in MediaHaven, and remove them when deleted.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=Path(os.environ.get("CONFIG_PATH", "config.yml")),
        help="settings structure (default: $CONFIG_PATH or ./config.yml)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("consume", help="consume S3 events from RabbitMQ until stopped")
    one = commands.add_parser("process", help="run one event JSON through the service")
    one.add_argument("file", help="a file holding the event, or - for standard input")
    commands.add_parser("demo", help="run the example events on in-memory adapters")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "demo":
        return run_demo(sys.stdout)
    try:
        container = start(args.config)
    except (ConfigError, OSError) as error:
        print(f"s3-events-handler: cannot start: {error}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        if args.command == "consume":
            return consume(container)
        return process(container, args.file)
    finally:
        container.shutdown_resources()


if __name__ == "__main__":
    sys.exit(main())

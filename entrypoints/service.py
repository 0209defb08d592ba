"""The service itself: started from its settings, consuming until stopped, or running one
event (`process`)."""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from s3_events_handler.adapters.cpu_affinity import pin_to_one_cpu
from s3_events_handler.adapters.rabbitmq.connection import cannot_reach, check_certificate
from s3_events_handler.application.messages import Delivery, Done, Outcome, Retry, Split
from s3_events_handler.entrypoints.container import Container, build_container
from s3_events_handler.entrypoints.exit_codes import ExitCode
from s3_events_handler.entrypoints.terminal import complain

log = logging.getLogger("s3-events-handler")


def start(config_path: Path, *, log_to: TextIO | None = None) -> Container:
    """`build_container`, the destination table read and the resources opened (the ledger
    among them); raises `ConfigError` or `BrokerCertificateError`, with whatever was opened
    closed again. Each is checked before anything is logged: a failed start says one thing.
    """
    container = build_container(config_path, log_to=log_to)
    try:
        destinations = container.destinations()
        # A broker certificate never accepted is a setting to fix: without this check, the
        # consumer would reconnect forever as if the broker were down.
        check_certificate(container.broker_settings())
        container.init_resources()
    except BaseException:
        container.shutdown_resources()
        raise
    log.info(
        "destination folders for %s (default %s): %s",
        container.settings().environment,
        destinations.default_folder,
        dict(destinations.folders),
    )
    return container


def consume(container: Container) -> int:
    if container.settings().pin_cpu:
        pin_to_one_cpu()  # before the workers start: they run where their parent does
    consumer = container.consumer()
    status = container.status_server()
    try:
        status.start()  # before the broker: the probes answer while it connects
    except OSError as error:
        complain(f"cannot start: METRICS_PORT={status.port}: {error}")
        return ExitCode.SETTINGS

    def stop(signum: int, frame: FrameType | None) -> None:
        log.info("received %s: finishing the messages in hand", signal.Signals(signum).name)
        consumer.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        consumer.run(grace_seconds=container.settings().shutdown_grace_seconds)
    finally:
        status.stop()
    log.info("stopped")
    return ExitCode.OK


def process(container: Container, source: str) -> int:
    """Run one event through the application against the configured services."""
    try:
        body = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as error:
        return cannot_read(source, error)
    broker = container.broker()
    try:
        broker.open()
    except Exception as error:  # nothing was done yet: say so plainly and let the caller retry
        complain(cannot_reach(broker.settings, error))
        return ExitCode.TEMPFAIL
    return _report(container.handler().handle, Delivery(body=body))


def cannot_read(source: str, error: OSError) -> int:
    """An event file that cannot be read is a wrong argument: one line, exit 2."""
    complain(f"cannot read {source}: {error.strerror}")
    return ExitCode.SETTINGS


def _report(handle: Any, delivery: Delivery) -> int:
    """The outcome as one line of JSON, and its exit status: a split message's is its worst
    record's, a retry before a dead letter, since a retried record may yet succeed."""
    outcome: Outcome = handle(delivery)
    if isinstance(outcome, Split):
        return max(_report(handle, Delivery(body=body)) for body in outcome.bodies)
    said: dict[str, Any] = {"outcome": outcome.event_outcome.action}
    if isinstance(outcome, Done):
        said |= {"result": outcome.result.kind, "summary": outcome.summary}
        status = ExitCode.OK
    elif isinstance(outcome, Retry):
        said |= {"reason": outcome.reason, "delay": outcome.delay_seconds}
        status = ExitCode.TEMPFAIL
    else:
        said |= {"reason": outcome.reason, "stage": outcome.stage}
        status = ExitCode.FAILED
    print(json.dumps(said, ensure_ascii=False))
    return status

"""The `Telemetry` port as Prometheus metrics, in a registry the caller owns (never the
global one), and as the `Health` the probes read (contract §7)."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from s3_events_handler.adapters.health import Health
from s3_events_handler.application.telemetry import (
    EVENT_KINDS,
    EventOutcome,
    EventReport,
    System,
    Telemetry,
)

# Most events take a few calls of tens of milliseconds; a slow MediaHaven or a call
# that tries again takes seconds, an HTTP timeout (30 s by default) longer still.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

# From the object's change to the event's outcome: seconds when all flows, minutes through
# the retry queues, hours or days when a backlog or an outage holds events back.
AGE_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 86400.0, 7 * 86400.0)

# Outcomes after which the archive is up to date with the event: what "last done" means.
_DONE = (EventOutcome.DONE, EventOutcome.SKIPPED)


def process_registry() -> CollectorRegistry:
    """A registry with the process's own metrics (CPU, memory, open files, Python, GC)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class PrometheusTelemetry(Telemetry):
    """Counts what the consumer reports into `registry`, and keeps `health` up to date."""

    def __init__(
        self,
        registry: CollectorRegistry,
        health: Health,
        *,
        version: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # Prometheus' conventions: a counter is its own series, without a `_created` beside it.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self._health = health
        self._clock = clock
        self._was_connected = False
        self._events = Counter(
            "s3_events_total",
            "Events settled with the broker, by kind (created, removed) and outcome.",
            ["kind", "outcome"],
            registry=registry,
        )
        self._duration = Histogram(
            "s3_events_duration_seconds",
            "Time from taking an event up until it was settled, by kind and outcome.",
            ["kind", "outcome"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self._age = Histogram(
            "s3_events_event_age_seconds",
            "Time from the object's change (the record's eventTime) to the event's outcome.",
            ["kind"],
            buckets=AGE_BUCKETS,
            registry=registry,
        )
        connected = Gauge(
            "s3_events_broker_connected",
            "1 while the consumer is connected to the broker and consuming, else 0.",
            registry=registry,
        )
        connected.set_function(lambda: float(health.consuming))  # what readiness reads too
        self._in_progress = Gauge(
            "s3_events_in_progress", "Events being handled right now.", registry=registry
        )
        self._reconnects = Counter(
            "s3_events_broker_reconnects_total",
            "Times the consumer connected to the broker again after losing its connection.",
            registry=registry,
        )
        self._ledger_hits = Counter(
            "s3_events_ledger_hits_total",
            "Ledger recalls that found the event: a redelivery, a retry or a duplicate.",
            registry=registry,
        )
        self._downstream_errors = Counter(
            "s3_events_downstream_errors_total",
            "Calls to an outside system that failed or were refused, by system.",
            ["system"],
            registry=registry,
        )
        # Every series there from the start, at 0, so `increase()` and alerts see the first event.
        for kind in EVENT_KINDS:
            self._age.labels(kind)
            for outcome in EventOutcome:
                self._events.labels(kind, outcome.value)
                self._duration.labels(kind, outcome.value)
        for system in System:
            self._downstream_errors.labels(system.value)
        self._last_done = Gauge(
            "s3_events_last_done_timestamp_seconds",
            "Unix time the last event was done or skipped; 0 until one is.",
            registry=registry,
        )
        build_info = Gauge(
            "s3_events_build_info", "The running version; always 1.", ["version"], registry=registry
        )
        build_info.labels(version).set(1)

    def event_started(self) -> None:
        self._in_progress.inc()

    def event_handled(self) -> None:
        self._in_progress.dec()

    def event_finished(self, report: EventReport) -> None:
        kind, outcome = report.facts.kind, report.outcome
        self._events.labels(kind, outcome.value).inc()
        self._duration.labels(kind, outcome.value).observe(report.seconds)
        if report.facts.event_time is not None:
            self._age.labels(kind).observe(max(0.0, self._clock() - report.facts.event_time))
        if outcome in _DONE:
            self._last_done.set(self._clock())

    def ledger_hit(self) -> None:
        self._ledger_hits.inc()

    def downstream_error(self, system: System) -> None:
        """Counted; a ledger that fails also makes the service not ready until it answers."""
        self._downstream_errors.labels(system.value).inc()
        if system is System.LEDGER:
            self._health.ledger_answers = False

    def ledger_answered(self) -> None:
        self._health.ledger_answers = True

    def connected(self) -> None:
        if self._was_connected:
            self._reconnects.inc()
        self._was_connected = True
        self._health.consuming = True

    def stopping(self) -> None:
        self._health.stopping = True

    def disconnected(self) -> None:
        self._health.consuming = False

    def loop_tick(self) -> None:
        self._health.tick()

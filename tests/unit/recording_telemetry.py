"""A `Telemetry` that notes every call, in order, for tests to read back."""

from __future__ import annotations

from s3_events_handler.application.telemetry import EventReport, System, Telemetry


class RecordingTelemetry(Telemetry):
    """Every call as a name (`downstream_error:pid`), and the reports of finished events."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.reports: list[EventReport] = []

    def event_started(self) -> None:
        self.calls.append("event_started")

    def event_handled(self) -> None:
        self.calls.append("event_handled")

    def event_finished(self, report: EventReport) -> None:
        self.calls.append("event_finished")
        self.reports.append(report)

    def ledger_hit(self) -> None:
        self.calls.append("ledger_hit")

    def ledger_answered(self) -> None:
        self.calls.append("ledger_answered")

    def downstream_error(self, system: System) -> None:
        self.calls.append(f"downstream_error:{system}")

    def connected(self) -> None:
        self.calls.append("connected")

    def stopping(self) -> None:
        self.calls.append("stopping")

    def disconnected(self) -> None:
        self.calls.append("disconnected")

    def loop_tick(self) -> None:
        self.calls.append("loop_tick")

    def without_ticks(self) -> list[str]:
        """The calls but `loop_tick`, which come as often as the loop goes round."""
        return [call for call in self.calls if call != "loop_tick"]

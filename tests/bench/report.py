"""What one run measured, and the table and JSON that show the runs side by side."""

from __future__ import annotations

import json
import math
import pstats
import re
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

REPO = Path(__file__).resolve().parents[2]
PROGRESS_POINTS = (10, 50, 90, 100)
MIB = 1024.0


def percentile(values: Sequence[float], percent: float) -> float:
    """Nearest rank: the smallest value with at least `percent` % of them at or below it."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True)
class RssSample:
    """Resident memory of the run's processes together, and how far the run had got."""

    seconds: float  # since the processes were started
    done: int
    rss_mib: float


@dataclass
class Measurement:
    """One run: `events` through `processes` process(es) of one mode at one added latency."""

    mode: str
    label: str
    latency_ms: float
    events: int
    processes: int
    seconds: float
    """From the first process subscribing to the incoming queue to the last transfer request."""
    events_per_second: float
    p50_ms: float
    p99_ms: float
    """Of publish to transfer request, per event; every event waited in the backlog."""
    cpu_ms_per_event: float
    machine_busy: float
    """The share of all the machine's CPUs busy (anyone's work) from subscribing to the end."""
    peak_rss_mib: float
    """The largest high-water mark (VmHWM) of one process."""
    peak_rss_mib_total: float
    startup_seconds: float
    """From starting the process(es) to the first one subscribing."""
    rss_at_progress: dict[int, float]
    rss_series: list[RssSample] = field(default_factory=list)
    speedup_vs_serial: float | None = None
    cpu_vs_floor: float | None = None
    """CPU ms/event over the floor's at the same latency."""
    log_files: list[str] = field(default_factory=list)
    runs: int = 1
    """How many runs this row is the median of."""

    def progress_line(self) -> str:
        points = " / ".join(
            f"{self.rss_at_progress[p]:.1f}" if p in self.rss_at_progress else "-"
            for p in PROGRESS_POINTS
        )
        return (
            f"RSS at {'/'.join(f'{p}%' for p in PROGRESS_POINTS)} of the events: {points} MiB"
            f" ({self.processes} process{'es' if self.processes > 1 else ''} together)"
        )


COLUMNS = (
    ("latency", 9),
    ("mode", 28),
    ("events/s", 9),
    ("p50 ms", 9),
    ("p99 ms", 9),
    ("CPU ms/event", 13),
    ("machine busy", 13),
    ("peak RSS MiB", 13),
    ("vs serial", 10),
    ("CPU vs floor", 13),
)


def _cells(row: Measurement) -> list[str]:
    speedup = "-" if row.speedup_vs_serial is None else f"{row.speedup_vs_serial:.2f}x"
    cpu = "-" if row.cpu_vs_floor is None else f"{row.cpu_vs_floor:.2f}x"
    return [
        f"{row.latency_ms:g} ms",
        row.label,
        f"{row.events_per_second:.1f}",
        f"{row.p50_ms:.0f}",
        f"{row.p99_ms:.0f}",
        f"{row.cpu_ms_per_event:.2f}",
        f"{row.machine_busy:.0%}",
        f"{row.peak_rss_mib:.1f}",
        speedup,
        cpu,
    ]


def table(rows: Sequence[Measurement]) -> str:
    """A Markdown table, readable as it is printed and pasteable into docs/performance.md."""
    header = "| " + " | ".join(name.ljust(width) for name, width in COLUMNS) + " |"
    rule = "|" + "|".join("-" * (width + 2) for _, width in COLUMNS) + "|"
    lines = [header, rule]
    for row in rows:
        cells = _cells(row)
        lines.append(
            "| "
            + " | ".join(
                cell.ljust(width) if n < 2 else cell.rjust(width)
                for n, (cell, (_, width)) in enumerate(zip(cells, COLUMNS, strict=True))
            )
            + " |"
        )
    return "\n".join(lines)


def add_speedups(rows: Sequence[Measurement]) -> None:
    """Each row's events/s over the serial consumer's, and its CPU per event over the
    floor's, at the same latency, where there is one."""
    serial = {row.latency_ms: row.events_per_second for row in rows if row.mode == "serial"}
    floor = {row.latency_ms: row.cpu_ms_per_event for row in rows if row.mode == "floor"}
    for row in rows:
        base = serial.get(row.latency_ms)
        row.speedup_vs_serial = row.events_per_second / base if base else None
        cpu = floor.get(row.latency_ms)
        row.cpu_vs_floor = row.cpu_ms_per_event / cpu if cpu else None


# What the median of several runs takes from each: every figure the table shows.
_MEDIAN_FIELDS = (
    "seconds",
    "events_per_second",
    "p50_ms",
    "p99_ms",
    "cpu_ms_per_event",
    "machine_busy",
    "startup_seconds",
)
# Memory is a limit to stay under: the highest of the runs, not their median.
_MAX_FIELDS = ("peak_rss_mib", "peak_rss_mib_total")


def medians(runs: Sequence[Measurement]) -> list[Measurement]:
    """One row per mode and latency, in the order they first ran: each figure the median of
    that row's runs (figure by figure, so a row's figures may come from different runs),
    the peak RSS their highest.
    The RSS series and logs are those of the run with the median events/s."""
    groups: dict[tuple[float, str], list[Measurement]] = {}
    for run in runs:
        groups.setdefault((run.latency_ms, run.mode), []).append(run)
    rows = []
    for group in groups.values():
        middle = sorted(group, key=lambda run: run.events_per_second)[(len(group) - 1) // 2]
        figures = {
            name: statistics.median(getattr(run, name) for run in group) for name in _MEDIAN_FIELDS
        }
        figures.update({name: max(getattr(run, name) for run in group) for name in _MAX_FIELDS})
        rows.append(replace(middle, runs=len(group), **figures))
    return rows


def replica_summary(rows: Sequence[Measurement]) -> list[str]:
    """For each row of replicas, how many times one process of the same kind it did."""
    single = {(row.latency_ms, row.mode): row for row in rows if row.processes == 1}
    lines = []
    for row in rows:
        kind = "default" if row.mode.endswith("-default") else "serial"
        one = single.get((row.latency_ms, kind))
        if row.processes > 1 and one is not None:
            lines.append(
                f"{row.label} at {row.latency_ms:g} ms: "
                f"{row.events_per_second / one.events_per_second:.2f}x one such process"
            )
    return lines


def write_json(
    path: Path,
    context: dict[str, Any],
    rows: Sequence[Measurement],
    *,
    runs: Sequence[Measurement] = (),
) -> None:
    """The table's rows, and every run they were taken from when there were several."""
    document: dict[str, Any] = {"context": context, "rows": [asdict(row) for row in rows]}
    if len(runs) > len(rows):
        document["runs"] = [asdict(run) for run in runs]
    path.write_text(json.dumps(document, indent=2) + "\n")


def print_rows(rows: Sequence[Measurement], out: TextIO) -> None:
    print(table(rows), file=out)


_INSTALLED = re.compile(r"^.*/(?:site-packages|lib/python3\.\d+|__editable__[^/]*)/")


def _where(function: tuple[str, int, str]) -> str:
    """`package/module.py:line(name)`, without the installation's or the repository's prefix."""
    filename, line, name = function
    if filename == "~":  # a built-in
        return name
    short = _INSTALLED.sub("", filename).removeprefix(str(REPO) + "/")
    return f"{short}:{line}({name})"


def hotspots(path: Path, events: int, *, sort: str, limit: int) -> str:
    """The profile's top `limit` functions by `sort` (`cumulative` or `tottime`), per event.

    `own` is time in the function itself, `cum` includes what it called. Per event means
    over the whole run divided by the events: start-up work is spread over them too.
    """
    stats: dict[tuple[str, int, str], tuple[int, int, float, float, Any]]
    stats = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    index = {"cumulative": 3, "tottime": 2}[sort]
    total = sum(entry[2] for entry in stats.values())
    ranked = sorted(stats.items(), key=lambda item: item[1][index], reverse=True)[:limit]
    lines = [
        f"{sort}: {total:.2f} s profiled in all, {total / events * 1e3:.2f} ms per event",
        f"{'calls/event':>11} {'own µs/event':>12} {'cum µs/event':>12}  function",
    ]
    for function, (_primitive, calls, own, cumulative, _callers) in ranked:
        lines.append(
            f"{calls / events:11.2f} {own / events * 1e6:12.1f} "
            f"{cumulative / events * 1e6:12.1f}  {_where(function)}"
        )
    return "\n".join(lines)

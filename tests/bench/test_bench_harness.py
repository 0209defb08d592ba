"""`python -m tests.bench` still runs from end to end, on a few events: no figure is checked.

The bench is not a test and its numbers depend on the machine; this only keeps its
moving parts (servers, preloading, the recorder, the floor, the profiler, the table,
the JSON) from rotting unnoticed.
"""

from __future__ import annotations

import io
import json
import pstats
from dataclasses import replace
from pathlib import Path

import pytest

from tests.bench import harness, instructions
from tests.bench.cli import main
from tests.bench.harness import Rig
from tests.bench.report import Measurement, medians

EVENTS = 20

pytestmark = pytest.mark.bench


def test_the_bench_runs_the_floor_the_consumer_and_the_profiler_and_reports_them(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    out, figures, profile = io.StringIO(), tmp_path / "bench.json", tmp_path / "consumer.prof"
    argv = ["--events", str(EVENTS), "--latency", "0", "--json", str(figures)]

    status = main([*argv, "--repeat", "2", "--profile", str(profile)], out=out)

    assert status == 0, out.getvalue()
    document = json.loads(figures.read_text())
    rows = document["rows"]
    assert [row["mode"] for row in rows] == ["floor", "serial", "default", "profile"]
    assert all(row["events"] == EVENTS for row in rows)
    assert [row["runs"] for row in rows] == [2, 2, 2, 1]
    # Taken in turns, so a change in the machine's load falls on every row alike.
    assert [run["mode"] for run in document["runs"]] == ["floor", "serial", "default"] * 2
    assert rows[1]["cpu_vs_floor"] == rows[1]["cpu_ms_per_event"] / rows[0]["cpu_ms_per_event"]
    printed = out.getvalue()
    assert "| floor (bare serial loop)" in printed
    assert "each row the median of 2 runs" in printed
    assert "cumulative:" in printed and "tottime:" in printed
    # Messages are handled on worker threads: the profile has them, not only the main thread.
    profiled = pstats.Stats(str(profile)).stats  # type: ignore[attr-defined]
    assert any(filename.endswith("sidecar_xml.py") for filename, _, _ in profiled)


def test_the_bench_runs_replicas_on_a_postgresql_ledger_of_its_own(
    broker: tuple[str, int], postgres_server: str
) -> None:
    out = io.StringIO()
    argv = ["--events", str(EVENTS), "--latency", "0", "--modes", "default"]

    status = main([*argv, "--replicas", "2", "--ledger", "postgres"], out=out)

    assert status == 0, out.getvalue()
    printed = out.getvalue()
    assert "| 2 replicas (default settings)" in printed
    assert "2 replicas (default settings) at 0 ms:" in printed  # against one such process


def test_a_row_of_several_runs_shows_their_medians_and_their_highest_memory() -> None:
    def run(events_per_second: float, cpu: float, rss: float) -> Measurement:
        return Measurement(
            mode="serial",
            label="serial",
            latency_ms=0,
            events=10,
            processes=1,
            seconds=10 / events_per_second,
            events_per_second=events_per_second,
            p50_ms=1,
            p99_ms=2,
            cpu_ms_per_event=cpu,
            machine_busy=0.5,
            peak_rss_mib=rss,
            peak_rss_mib_total=rss,
            startup_seconds=0.2,
            rss_at_progress={},
        )

    (row,) = medians([run(100, 3.0, 50), run(300, 1.0, 52), run(200, 9.0, 51)])

    assert (row.events_per_second, row.cpu_ms_per_event, row.peak_rss_mib) == (200, 3.0, 52)
    assert row.runs == 3


def test_a_mode_runs_under_its_wrapper_and_the_instruction_count_is_read_from_its_log(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    """What `tests.bench.instructions` builds on; valgrind itself is too slow for the test run."""
    announce = 'echo "==1== Collected : 123456789"; exec "$0" "$@"'
    wrapped = replace(harness.SERIAL, wrapper=("sh", "-c", announce), patience=2.0)

    with Rig(tmp_path, broker, ledger_dsn=None) as rig:
        run = rig.run(wrapped, EVENTS, 0)

    assert run.events == EVENTS
    assert instructions.collected(Path(run.log_files[0])) == 123456789

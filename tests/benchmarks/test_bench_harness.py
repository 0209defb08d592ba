"""`python -m bench` still runs from end to end, on a few events: no figure is checked.

The bench is not a test and its numbers depend on the machine; this only keeps its
moving parts (servers, preloading, the recorder, the floor, the profiler, the table,
the JSON) from rotting unnoticed.
"""

from __future__ import annotations

import io
import json
import pstats
from pathlib import Path

import pytest

from bench.cli import main

EVENTS = 20

pytestmark = pytest.mark.bench


def test_the_bench_runs_the_floor_the_consumer_and_the_profiler_and_reports_them(
    broker: tuple[str, int], tmp_path: Path
) -> None:
    out, figures, profile = io.StringIO(), tmp_path / "bench.json", tmp_path / "consumer.prof"
    argv = ["--events", str(EVENTS), "--latency", "0", "--json", str(figures)]

    status = main([*argv, "--profile", str(profile)], out=out)

    assert status == 0, out.getvalue()
    rows = json.loads(figures.read_text())["rows"]
    assert [row["mode"] for row in rows] == ["floor", "serial", "default", "profile"]
    assert all(row["events"] == EVENTS for row in rows)
    printed = out.getvalue()
    assert "| floor (bare serial loop)" in printed
    assert "cumulative:" in printed and "tottime:" in printed
    # Messages are handled on worker threads: the profile has them, not only the main thread.
    profiled = pstats.Stats(str(profile)).stats  # type: ignore[attr-defined]
    assert any(filename.endswith("sidecar_xml.py") for filename, _, _ in profiled)


def test_the_bench_runs_replicas_on_a_postgresql_ledger_of_its_own(
    broker: tuple[str, int], postgres_server: str
) -> None:
    out = io.StringIO()
    argv = ["--events", str(EVENTS), "--latency", "0", "--modes", ""]

    status = main([*argv, "--replicas", "2", "--ledger", "postgres"], out=out)

    assert status == 0, out.getvalue()
    assert "| 2 replicas (CONCURRENCY=1)" in out.getvalue()

"""`python -m tests.bench.reconcile` still runs and reports, on a few objects: no figure is checked
but the ones the bench exists for are there (docs/performance.md, "Reconcile")."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from tests.bench.reconcile import main

pytestmark = pytest.mark.bench


def test_the_reconcile_bench_reports_objects_a_second_and_peak_memory(tmp_path: Path) -> None:
    out, figures = io.StringIO(), tmp_path / "reconcile.json"

    status = main(
        ["--objects", "60", "--latency", "0,5", "--concurrency", "4", "--json", str(figures)],
        out=out,
    )

    assert status == 0
    rows = json.loads(figures.read_text())["rows"]
    assert [row["latency_ms"] for row in rows] == [0, 5]
    for row in rows:
        assert row["objects"] == 60 and row["archived"] == 1  # one record in 200
        assert row["objects_per_second"] > 0 and row["peak_rss_mib"] > 0
    assert rows[1]["littles_law_bound"] == 4 / 0.005
    assert "| 5 ms | 60 |" in out.getvalue()

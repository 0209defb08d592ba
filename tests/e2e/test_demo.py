"""`s3-events-handler demo`: the example events on the in-memory adapters, as a user runs it."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.e2e.service import command


def run_demo(tmp_path: Path) -> str:
    finished = subprocess.run(
        [*command(), "demo"], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert finished.returncode == 0, finished.stderr
    return finished.stdout


def test_the_demo_shows_the_golden_sidecars_and_transfer_request(
    tmp_path: Path, examples: Path
) -> None:
    out = run_demo(tmp_path)
    assert (examples / "sidecar-essence.xml").read_text() in out
    assert (examples / "sidecar-collateral.xml").read_text() in out
    golden = json.loads((examples / "transfer-request-essence.json").read_text())
    assert json.dumps(golden, indent=2) in out


def test_the_demo_walks_through_both_flows_and_bad_input(tmp_path: Path) -> None:
    out = run_demo(tmp_path)
    assert "already handled" in out  # the duplicate event
    assert "already archived" in out  # a new event for what MediaHaven has
    assert "relate k98z0d4w1q_closedOt to record fragment-1" in out
    assert out.index("delete record collateral-1") < out.index("delete record essence-1")
    assert "outcome: DeadLetter: body is not JSON" in out


def test_the_demo_piped_into_head_stops_quietly(tmp_path: Path) -> None:
    """`demo | head -1`: head leaves after one line, and the demo with it, without a word."""
    pipeline = f'{shlex.join([*command(), "demo"])} | head -1; exit "${{PIPESTATUS[0]}}"'
    # Unbuffered, each line meets the pipe as it is written, after head may have gone.
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    finished = subprocess.run(
        ["bash", "-c", pipeline],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=environment,
        timeout=60,
    )
    assert finished.returncode in (0, 141), finished.stderr
    assert "Traceback" not in finished.stderr
    assert "BrokenPipe" not in finished.stderr
    assert finished.stdout == "\n"  # the demo's first line


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
def test_the_demo_into_a_pipe_nobody_reads_stops_quietly(tmp_path: Path, buffered: bool) -> None:
    """The same, every time: the reader is gone before the first line is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if not buffered:
        environment["PYTHONUNBUFFERED"] = "1"
    try:
        finished = subprocess.run(
            [*command(), "demo"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            env=environment,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert finished.returncode in (0, 141), finished.stderr
    assert "Traceback" not in finished.stderr
    assert "BrokenPipe" not in finished.stderr

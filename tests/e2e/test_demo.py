"""`s3-events-handler demo`: the example events on the in-memory adapters, as a user runs it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

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

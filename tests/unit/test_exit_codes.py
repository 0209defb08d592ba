"""The exit statuses: defined once, listed by `--help`, and in the operators' table."""

from __future__ import annotations

import re

import pytest

from s3_events_handler.entrypoints.cli import parser
from s3_events_handler.entrypoints.exit_codes import MEANINGS, ExitCode
from tests.unit.test_config import REPO


def test_every_status_has_its_one_line_meaning_in_the_top_help() -> None:
    shown = parser().format_help()
    for code in ExitCode:
        assert f"  {code.value:<4}{MEANINGS[code]}\n" in shown, code
    assert "docs/operations.md" in shown


def test_a_wrong_argument_is_the_settings_status() -> None:
    """argparse's usage error: nothing was done, as for a setting that is wrong."""
    with pytest.raises(SystemExit) as exited:
        parser().parse_args(["no-such-command"])
    assert exited.value.code == ExitCode.SETTINGS


def test_the_operations_table_has_a_row_for_every_status() -> None:
    text = (REPO / "docs" / "operations.md").read_text()
    section = text[text.index("## Exit statuses") :]
    section = section[: section.index("\n## ")]
    rows = {int(found) for found in re.findall(r"^\| (\d+) \|", section, re.MULTILINE)}
    assert rows == {code.value for code in ExitCode}

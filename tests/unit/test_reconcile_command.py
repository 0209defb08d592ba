"""`reconcile`'s arguments, settings and report, without a process or a server."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import pytest

from s3_events_handler.adapters.config import S3_NEEDED, ConfigError, load_settings
from s3_events_handler.domain.bucket import ObjectState, Reconciled, StoredObject
from s3_events_handler.entrypoints.cli import parser
from s3_events_handler.entrypoints.reconcile import duration
from s3_events_handler.entrypoints.reconcile_output import Report
from tests.support.clock import Clock
from tests.unit.test_config import REPO, REQUIRED

MODIFIED = datetime(2026, 11, 20, 9, 14, 3, tzinfo=UTC)


def parsed(*argv: str) -> object:
    args = parser().parse_args(["reconcile", *argv])
    args.check(args)
    return args


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0s", timedelta(0)), ("30m", timedelta(minutes=30)), ("1h", timedelta(hours=1)),
     ("2d", timedelta(days=2))],
)  # fmt: skip
def test_a_duration_is_a_whole_number_and_a_unit(text: str, expected: timedelta) -> None:
    assert duration(text) == expected


@pytest.mark.parametrize("text", ["", "1", "1w", "-1h", "1.5h", "h", "1 h 2m"])
def test_anything_else_is_not_a_duration(text: str) -> None:
    with pytest.raises(Exception, match="not a duration"):
        duration(text)


def test_the_defaults_are_the_contract_s() -> None:
    args = parsed("--bucket", "b")
    assert (args.older_than, args.rate, args.prefix, args.limit) == (  # type: ignore[attr-defined]
        timedelta(hours=1), 50.0, "", None,
    )  # fmt: skip


def test_the_tenant_is_normalised_and_goes_with_enqueue() -> None:
    args = parsed("--bucket", "b", "--enqueue", "--tenant", "or-RF5KF25")
    assert args.tenant == "OR-rf5kf25"  # type: ignore[attr-defined]
    for wrong in (["--enqueue"], ["--tenant", "OR-rf5kf25"], ["--enqueue", "--tenant", "x"]):
        with pytest.raises(SystemExit) as stopped:
            parsed("--bucket", "b", *wrong)
        assert stopped.value.code == 2


def test_the_s3_settings_name_every_missing_one_and_default_the_region() -> None:
    with pytest.raises(ConfigError, match="S3_ENDPOINT_URL, S3_ACCESS_KEY_ID, S3_SECRET"):
        load_settings(REPO / "config.yml", REQUIRED, needs=S3_NEEDED)
    settings = load_settings(
        REPO / "config.yml",
        {**REQUIRED, "S3_ENDPOINT_URL": "http://s3", "S3_ACCESS_KEY_ID": "k",
         "S3_SECRET_ACCESS_KEY": "s3cr3t"},
        needs=S3_NEEDED,
    )  # fmt: skip
    assert (settings.s3.region, settings.s3.domain) == ("us-east-1", "s3")
    assert "s3cr3t" not in repr(settings)
    assert "s3cr3t" in settings.secrets


def test_what_reconcile_needs_is_named_with_what_every_command_needs() -> None:
    environ = {**REQUIRED, "RABBIT_MQ_HOST": "", "S3_ACCESS_KEY_ID": "k"}
    with pytest.raises(ConfigError) as raised:
        load_settings(REPO / "config.yml", environ, needs=S3_NEEDED)
    assert raised.value.missing == ["RABBIT_MQ_HOST", "S3_ENDPOINT_URL", "S3_SECRET_ACCESS_KEY"]


def test_the_other_commands_start_without_the_s3_settings() -> None:
    settings = load_settings(REPO / "config.yml", REQUIRED)
    assert (settings.s3.endpoint_url, settings.s3.secret_access_key) == ("", "")
    assert "" not in settings.secrets


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def result(key: str, state: ObjectState, enqueued: bool = False) -> Reconciled:
    return Reconciled(StoredObject("b", key, 42, '"e"', MODIFIED), state, enqueued)


def test_only_what_is_not_archived_is_printed_then_the_summary() -> None:
    out, err, clock = io.StringIO(), io.StringIO(), Clock()
    report = Report(out, err, as_json=False, enqueue=True, clock=clock)
    report.add(result("a.mxf", ObjectState.ARCHIVED))
    report.add(result("b\tc.mxf", ObjectState.MISSING, enqueued=True))
    report.add(result("d.mxf", ObjectState.IN_FLIGHT))
    clock.now += 2
    report.close("b")

    assert out.getvalue().splitlines() == [
        "missing    2026-11-20T09:14:03Z             42  b\\x09c.mxf  (enqueued)",
        "in flight  2026-11-20T09:14:03Z             42  d.mxf",
    ]
    assert err.getvalue() == (
        "3 object(s) of b looked at in 2.0 s (2 objects/s): "
        "1 archived, 1 in flight, 1 missing, 1 enqueued\n"
    )
    assert report.missing == 1


def test_json_is_one_object_a_line() -> None:
    out = io.StringIO()
    report = Report(out, io.StringIO(), as_json=True, enqueue=False)
    report.add(result("ü 😀.mxf", ObjectState.MISSING))

    assert json.loads(out.getvalue()) == {
        "bucket": "b", "key": "ü 😀.mxf", "size": 42,
        "last_modified": "2026-11-20T09:14:03Z", "state": "missing",
    }  # fmt: skip


def test_on_a_terminal_a_progress_line_is_redrawn_and_cleared() -> None:
    out, err, clock = io.StringIO(), Terminal(), Clock()
    report = Report(out, err, as_json=False, enqueue=False, clock=clock)
    report.add(result("a.mxf", ObjectState.ARCHIVED))
    assert err.getvalue() == ""  # not yet half a second
    clock.now += 0.6
    report.add(result("b.mxf", ObjectState.ARCHIVED))
    assert err.getvalue() == "\r2 archived, 0 in flight, 0 missing …"
    report.close("b")
    assert err.getvalue().endswith("\r\x1b[K2 object(s) of b looked at in 0.6 s (3 objects/s): "
                                   "2 archived, 0 in flight, 0 missing\n")  # fmt: skip

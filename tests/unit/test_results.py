"""Each use case result reads as the one line operators know from the logs and `process`."""

from __future__ import annotations

import pytest

from s3_events_handler.application.messages import Done
from s3_events_handler.domain.results import (
    AlreadyArchived,
    AlreadyHandled,
    NothingToRemove,
    Removed,
    Result,
    Sent,
)

KEY = "20261120-journaal-1900-a7f3c2d1-55e4-4b2a-9c1d-0e8f7a6b5c4d.MXF"
SENT = Sent(
    key=KEY,
    cp_name="VRT",
    folder="TAPE-SHARE-EVENTS",
    sidecar_file="k98z0d4w1q.xml",
    pid="k98z0d4w1q",
)


@pytest.mark.parametrize(
    ("result", "line"),
    [
        (SENT, f"sent VRT/TAPE-SHARE-EVENTS/k98z0d4w1q.xml for {KEY}"),
        (AlreadyArchived(key=KEY), f"already archived: {KEY}"),
        (AlreadyHandled(key=KEY, pid="k98z0d4w1q"), f"already handled: {KEY} as k98z0d4w1q"),
        (
            Removed(bucket="mam-highresvideo", key=KEY, essences=1, collaterals=2),
            f"removed 1 essence(s) and 2 collateral(s) for mam-highresvideo/{KEY}",
        ),
        (
            NothingToRemove(bucket="mam-highresvideo", key=KEY),
            f"nothing to remove for mam-highresvideo/{KEY}",
        ),
    ],
)
def test_a_result_reads_as_todays_line(result: Result, line: str) -> None:
    assert str(result) == line
    assert Done(result=result).summary == line


def test_every_kind_of_result_has_its_own_name() -> None:
    kinds = [
        kind.kind for kind in (Sent, AlreadyArchived, AlreadyHandled, Removed, NothingToRemove)
    ]
    assert kinds == ["sent", "already-archived", "already-handled", "removed", "nothing-to-remove"]

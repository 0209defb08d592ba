"""`dead-letters drop` as an operator meets it: when it asks, what an answer does, what it
refuses, and what it logs; on the stand-in broker, so every case is cheap."""

from __future__ import annotations

import io
import logging

import pytest

from s3_events_handler.adapters.logs import fields_of
from s3_events_handler.application.replay import Choosing
from s3_events_handler.entrypoints.dead_letters import REMOVALS_LOGGER, drop_dead_letters
from s3_events_handler.entrypoints.terminal import is_yes
from tests.unit.fake_dead_letter_broker import DLQ, FakeBroker, properties, queue_of


class Terminal(io.StringIO):
    """Standard input as a person at a terminal types it."""

    def isatty(self) -> bool:
        return True


def parked() -> FakeBroker:
    return FakeBroker.holding(
        (properties(message_id="msg-0", headers={"x-error": "body is not JSON"}), b"not json"),
        (properties(message_id="msg-1", headers={"x-error": "no MAM label"}), b"{}"),
        (properties(message_id="msg-2", headers={"x-error": "body is not JSON"}), b"[1"),
    )


def drop(
    broker: FakeBroker,
    choosing: Choosing,
    *,
    stdin: io.StringIO,
    yes: bool = False,
    dry_run: bool = False,
) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = drop_dead_letters(
        queue_of(broker),
        choosing,
        what="the dead letters whose x-error contains 'not json' (any case)",
        yes=yes,
        dry_run=dry_run,
        out=out,
        stdin=stdin,
        err=err,
    )
    return status, out.getvalue(), err.getvalue()


def not_json() -> Choosing:
    return Choosing.by_reason_text("not json")


def test_with_yes_it_drops_the_chosen_without_asking() -> None:
    broker = parked()
    stdin = Terminal("n\n")
    status, out, err = drop(broker, not_json(), stdin=stdin, yes=True)
    assert status == 0, err
    assert broker.bodies() == [b"{}"]
    assert stdin.tell() == 0 and "[y/N]" not in err  # never asked
    assert out.splitlines()[-1] == (
        "dropped 2, skipped 1 (1 not chosen; still in the dead-letter queue)"
    )


@pytest.mark.parametrize("answer", ["y\n", "YES\n", "  yes \n"])
def test_on_a_terminal_it_asks_and_a_yes_drops(answer: str) -> None:
    broker = parked()
    status, _, err = drop(broker, not_json(), stdin=Terminal(answer))
    assert status == 0, err
    assert err.startswith(
        "Drop the dead letters whose x-error contains 'not json' (any case) "
        f"from {DLQ} (3 dead letter(s) there now)? Nothing brings them back. [y/N] "
    )
    assert broker.bodies() == [b"{}"]


@pytest.mark.parametrize("answer", ["n\n", "\n", "", "yess\n", "no\n"])
def test_on_a_terminal_anything_but_yes_drops_nothing(answer: str) -> None:
    broker = parked()
    status, out, err = drop(broker, not_json(), stdin=Terminal(answer))
    assert (status, out) == (1, "")
    assert err.rstrip().endswith("nothing dropped")
    assert broker.bodies() == [b"not json", b"{}", b"[1"] and broker.commits == 0


def test_without_a_terminal_or_yes_it_refuses_with_2_before_touching_the_queue() -> None:
    broker = parked()
    status, out, err = drop(broker, not_json(), stdin=io.StringIO("y\n"))
    assert (status, out) == (2, "")
    assert "pass --yes" in err and "not a terminal" in err
    assert not broker.consuming and broker.commits == 0
    assert broker.bodies() == [b"not json", b"{}", b"[1"]


def test_a_dry_run_neither_asks_nor_changes_anything() -> None:
    broker = parked()
    status, out, err = drop(broker, not_json(), stdin=io.StringIO(""), dry_run=True)
    assert status == 0, err
    assert [line.split()[0] for line in out.splitlines()[2:-1]] == ["msg-0", "msg-2"]
    assert "would drop 2, skip 1" in out.splitlines()[-1]
    assert broker.bodies() == [b"not json", b"{}", b"[1"]


def test_an_id_not_there_is_reported_and_the_others_dropped() -> None:
    broker = parked()
    status, out, _ = drop(broker, Choosing.by_ids(["msg-1", "msg-9"]), stdin=Terminal(),
                          yes=True)  # fmt: skip
    assert status == 1
    assert "not found msg-9: no such dead letter in " in out
    assert broker.bodies() == [b"not json", b"[1"]


def test_a_limit_drops_the_first_n_chosen_only() -> None:
    broker = parked()
    status, out, _ = drop(broker, Choosing(limit=1), stdin=Terminal(),
                          yes=True)  # fmt: skip
    assert status == 0
    assert broker.bodies() == [b"{}", b"[1"]
    assert out.splitlines()[-1] == "dropped 1, skipped 0; stopped at --limit 1, 2 not looked at"


def test_each_removal_is_logged_at_info_with_its_id_and_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=REMOVALS_LOGGER)
    drop(parked(), not_json(), stdin=Terminal(), yes=True)
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == REMOVALS_LOGGER]
    assert lines == [
        (logging.INFO, f"dropped dead letter msg-0 from {DLQ}: body is not JSON"),
        (logging.INFO, f"dropped dead letter msg-2 from {DLQ}: body is not JSON"),
    ]
    fields = fields_of(caplog.records[0])
    assert (fields["dead_letter_id"], fields["reason"]) == ("msg-0", "body is not JSON")


@pytest.mark.parametrize(
    ("answer", "yes"),
    [("y", True), ("Y\n", True), ("yes", True), ("n", False), ("", False), ("oui", False)],
)
def test_only_y_or_yes_is_yes(answer: str, yes: bool) -> None:
    assert is_yes(answer) is yes

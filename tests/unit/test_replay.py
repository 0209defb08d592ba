"""What a replay does to a dead letter's headers, and which dead letters it takes."""

from __future__ import annotations

import re

import pytest

from s3_events_handler.adapters.rabbitmq.headers import replay_headers
from s3_events_handler.application.replay import Choosing


def test_a_replay_starts_over_but_keeps_the_pid_and_everything_else() -> None:
    headers = {
        "x-attempt": 8,
        "x-error": "gave up after 8 attempts: MediaHaven answered 503",
        "x-error-stage": "archived-check",
        "x-dead-lettered-at": "2024-05-01T12:30:05+00:00",
        "x-pid": "k98z0d4w1q",
        "x-death": [{"queue": "s3-events.retry.10", "reason": "expired"}],
        "x-origin": "gateway",
    }
    assert replay_headers(headers) == {
        "x-pid": "k98z0d4w1q",
        "x-death": [{"queue": "s3-events.retry.10", "reason": "expired"}],
        "x-origin": "gateway",
    }
    assert "x-attempt" in headers  # the dead letter's own headers are left alone


def test_everything_is_chosen_with_or_without_a_reason() -> None:
    assert Choosing().chooses("any", None)
    assert Choosing().chooses("any", "bad")


def test_ids_choose_exactly_those() -> None:
    choosing = Choosing.by_ids(["msg-1", "3f2a9c0d1e4b"])
    assert choosing.chooses("msg-1", "bad")
    assert choosing.chooses("3f2a9c0d1e4b", None)
    assert not choosing.chooses("msg-2", "bad")
    with pytest.raises(ValueError, match="at least one id"):
        Choosing.by_ids([])


def test_a_piece_of_the_reason_matches_in_any_case_and_literally() -> None:
    choosing = Choosing.by_reason_text("NO FOLDER /vrt/")
    assert choosing.chooses("a", "no folder /VRT/TAPE-SHARE-EVENTS on the transport server")
    assert not choosing.chooses("a", "organisation OR-rf5kf25 has no MAM label")
    assert not choosing.chooses("a", None)
    assert Choosing.by_reason_text("answered 5(0)3").chooses("a", "MediaHaven answered 5(0)3")


def test_a_pattern_is_searched_in_the_reason() -> None:
    choosing = Choosing.by_reason_pattern(r"answered 5\d\d")
    assert choosing.chooses("a", "gave up after 8 attempts: MediaHaven answered 503 to search")
    assert not choosing.chooses("a", "MediaHaven answered 404 to search")
    with pytest.raises(re.error):
        Choosing.by_reason_pattern("answered (")


def test_choosing_takes_the_chosen_until_the_limit_and_nothing_after() -> None:
    choosing = Choosing.by_reason_text("bad", limit=2)
    taken = [choosing.take(f"m{n}", reason) for n, reason in enumerate(
        ["bad", "good", None, "BAD", "bad"])]  # fmt: skip
    assert taken == [True, False, False, True, False]
    assert (choosing.taken, choosing.enough) == (2, True)


def test_without_a_limit_choosing_never_has_enough() -> None:
    choosing = Choosing()
    assert all(choosing.take(f"m{n}", None) for n in range(1000))
    assert not choosing.enough


def test_choosing_tells_which_ids_asked_for_were_not_met() -> None:
    choosing = Choosing.by_ids(["msg-3", "msg-1", "msg-9"])
    assert [choosing.take(i, "bad") for i in ("msg-1", "msg-2", "msg-1")] == [True, False, True]
    assert choosing.not_found() == ["msg-3", "msg-9"]
    with pytest.raises(ValueError, match="at least one"):
        Choosing(limit=0)

"""The one secret masker every adapter and the log output use."""

from __future__ import annotations

from s3_events_handler.application.reasons import MASK, Redactor


def test_each_secret_is_masked_wherever_it_stands() -> None:
    assert Redactor(["hunter2"]).redact("user bob, password hunter2, again hunter2") == (
        f"user bob, password {MASK}, again {MASK}"
    )


def test_a_secret_containing_another_is_masked_whole() -> None:
    assert Redactor(["abc", "abc123xyz"]).redact("token abc123xyz") == f"token {MASK}"


def test_empty_and_missing_secrets_change_nothing() -> None:
    assert Redactor(["", None]).redact("nothing to hide") == "nothing to hide"
    assert not Redactor(["", None])


def test_secrets_shorter_than_asked_are_left_alone() -> None:
    redactor = Redactor(["ab", "abcd"], shortest=4)

    assert redactor.redact("ab abcd") == f"ab {MASK}"

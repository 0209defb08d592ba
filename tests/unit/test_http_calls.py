"""What the one HTTP retry mechanism quotes of an answer."""

from __future__ import annotations

import requests

from s3_events_handler.adapters.http_calls import SNIPPET_LENGTH, HttpService
from s3_events_handler.domain.errors import System

TOKEN = "t0ken-" * 8


class Example(HttpService):
    name = "Example"
    system = System.PID
    pauses = ()

    def secrets(self) -> list[str | None]:
        return [TOKEN]


def service() -> HttpService:
    return Example(session=requests.Session(), url="https://example.invalid/", timeout=1.0)


def test_a_snippet_is_one_short_line() -> None:
    snippet = service().snippet("line one\n  line two " + "x" * 500)

    assert snippet.startswith("line one line two x")
    assert len(snippet) == SNIPPET_LENGTH + 1


def test_a_secret_cut_by_the_snippets_end_is_still_masked() -> None:
    text = "a" * (SNIPPET_LENGTH - 10) + " " + TOKEN

    assert TOKEN[:9] not in service().snippet(text)


def test_an_empty_answer_says_so() -> None:
    assert service().snippet(" \n ") == "(empty body)"

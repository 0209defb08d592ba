"""Log output: JSON lines, and secrets masked even when they slip into a message."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Mapping

import pytest

from s3_events_handler.adapters.logs import JsonFormatter, MaskSecrets, TextFormatter, with_fields


def emit(
    message: str,
    *args: object,
    exc: BaseException | None = None,
    fields: Mapping[str, object] | None = None,
    formatter: logging.Formatter | None = None,
) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter or JsonFormatter())
    handler.addFilter(MaskSecrets(["hunter2-secret", "client-s3cr3t"]))
    logger = logging.getLogger(f"test-logs-{id(stream)}")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        if exc is not None:
            try:
                raise exc
            except BaseException:
                logger.exception(message, *args)
        else:
            logger.warning(message, *args, extra=with_fields(fields or {}))
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def test_each_entry_is_one_json_object_on_one_line() -> None:
    out = emit("sent %s", "k98z0d4w1q.xml")
    assert out.count("\n") == 1
    entry = json.loads(out)
    assert (entry["level"], entry["message"]) == ("WARNING", "sent k98z0d4w1q.xml")


def test_a_secret_in_a_message_or_its_arguments_is_masked() -> None:
    out = emit("login with hunter2-secret as %s", "client-s3cr3t")
    assert "hunter2" not in out and "s3cr3t" not in out
    assert json.loads(out)["message"] == "login with *** as ***"


def test_a_secret_in_an_exception_is_masked() -> None:
    out = emit("failed", exc=RuntimeError("password hunter2-secret refused"))
    assert "hunter2-secret" not in out
    assert "RuntimeError: password *** refused" in json.loads(out)["message"]


EVENT = {
    "correlation_id": "c-1",
    "kind": "created",
    "bucket": "mam-highresvideo",
    "key": "a clip.MXF",
    "pid": "k98z0d4w1q",
    "outcome": "done",
    "stage": "done",
    "attempt": 1,
    "duration_ms": 12.5,
}


def test_fields_are_keys_of_the_json_line_beside_the_message() -> None:
    entry = json.loads(emit("done: message %d", 3, fields=EVENT))
    assert entry["message"] == "done: message 3"
    assert {k: entry[k] for k in EVENT} == EVENT


def test_a_field_never_replaces_what_every_line_has() -> None:
    entry = json.loads(emit("the message", fields={"message": "other", "level": "DEBUG"}))
    assert (entry["message"], entry["level"]) == ("the message", "WARNING")


def test_text_lines_end_in_key_value_pairs_a_person_can_read() -> None:
    fields = {"key": "a clip=1.MXF", "pid": None, "attempt": 2, "bucket": "mam-highresvideo"}
    line = emit("done: message 3", fields=fields, formatter=TextFormatter()).rstrip("\n")
    assert line.endswith(
        'done: message 3 key="a clip=1.MXF" pid=- attempt=2 bucket=mam-highresvideo'
    )


def test_a_secret_in_a_field_is_masked() -> None:
    entry = json.loads(emit("uploaded", fields={"key": "folder/hunter2-secret.xml", "n": 1}))
    assert entry["key"] == "folder/***.xml"
    assert entry["n"] == 1


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()])
def test_a_field_with_line_breaks_leaves_the_line_one_line(formatter: logging.Formatter) -> None:
    key = "a\nb\rc\x0bd\x0ce\x1cf\x1dg\x1eh\x85i\u2028j\u2029k.MXF"
    line = emit("done", fields={"key": key}, formatter=formatter)
    assert len(line.splitlines()) == 1
    if isinstance(formatter, JsonFormatter):
        assert json.loads(line)["key"] == key

"""Log output: JSON lines, and secrets masked even when they slip into a message."""

from __future__ import annotations

import io
import json
import logging
import re
import threading
from collections.abc import Mapping

import pytest

from s3_events_handler.adapters.logs import JsonFormatter, TextFormatter, with_fields
from s3_events_handler.application.log_context import bind_event_fields, event_log_context


def emit(
    message: str,
    *args: object,
    exc: BaseException | None = None,
    fields: Mapping[str, object] | None = None,
    formatter: logging.Formatter | None = None,
) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter or JsonFormatter(["hunter2-secret", "client-s3cr3t"]))
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


def test_each_entry_is_one_json_object_on_one_line_in_the_keys_of_meemoos_services() -> None:
    out = emit("sent %s", "k98z0d4w1q.xml")
    assert out.count("\n") == 1
    entry = json.loads(out)
    assert list(entry) == ["message", "level", "logger", "timestamp", "source"]
    assert (entry["level"], entry["message"]) == ("warning", "sent k98z0d4w1q.xml")
    assert entry["logger"].startswith("test-logs-")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", entry["timestamp"])
    file, function, line = entry["source"].rsplit(":", 2)
    assert (file.endswith("test_logs.py"), function, line.isdigit()) == (True, "emit", True)


def test_a_secret_in_a_message_or_its_arguments_is_masked() -> None:
    out = emit("login with hunter2-secret as %s", "client-s3cr3t")
    assert "hunter2" not in out and "s3cr3t" not in out
    assert json.loads(out)["message"] == "login with *** as ***"


def test_a_secret_in_an_exception_is_masked_and_the_traceback_stays_a_field() -> None:
    out = emit("failed", exc=RuntimeError("password hunter2-secret refused"))
    assert "hunter2-secret" not in out
    entry = json.loads(out)
    assert entry["message"] == "failed"
    assert entry["exc_info"].startswith("Traceback (most recent call last):")
    assert entry["exc_info"].endswith("RuntimeError: password *** refused")


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
    assert (entry["message"], entry["level"]) == ("the message", "warning")


def test_every_line_written_while_an_event_is_handled_carries_its_fields_in_its_thread() -> None:
    lines: dict[str, str] = {}

    def handle(name: str) -> None:
        with event_log_context(correlation_id=f"c-{name}"):
            bind_event_fields(bucket="mam-highresvideo", key=f"{name}.MXF")
            lines[name] = emit("attempt %d failed", 1)
        lines[f"{name} after"] = emit("between events")

    workers = [threading.Thread(target=handle, args=(name,)) for name in ("a", "b")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    for name in ("a", "b"):
        entry = json.loads(lines[name])
        assert (entry["correlation_id"], entry["bucket"], entry["key"]) == (
            f"c-{name}",
            "mam-highresvideo",
            f"{name}.MXF",
        )
        assert "correlation_id" not in json.loads(lines[f"{name} after"])


def test_a_text_line_cannot_be_forged_by_what_came_from_outside() -> None:
    forged = "c-1\n2026-12-07T09:00:00.000000Z error s3_events_handler: forged"
    with event_log_context(correlation_id=forged):
        text = emit("done: %s", forged, formatter=TextFormatter())
    assert len(text.splitlines()) == 1
    assert "\\n2026" in text  # escaped where it stands


def test_a_text_traceback_stays_apart_from_the_lines() -> None:
    text = emit("failed", exc=RuntimeError("key a\nb"), formatter=TextFormatter())
    first, *rest = text.splitlines()
    assert first.endswith("failed") and rest
    assert all(line.startswith("  | ") for line in rest)


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

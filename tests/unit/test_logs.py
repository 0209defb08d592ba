"""Log output: JSON lines, and secrets masked even when they slip into a message."""

from __future__ import annotations

import io
import json
import logging

from s3_events_handler.adapters.logs import JsonFormatter, MaskSecrets


def emit(message: str, *args: object, exc: BaseException | None = None) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
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
            logger.warning(message, *args)
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

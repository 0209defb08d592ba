"""Log output: one JSON object a line (or plain text), with known secrets masked.

A line may carry fields beside its message (`extra=with_fields(...)`): JSON keys of
their own, or `key=value` after the text, so a log shipper and a person read the
same line (SPEC 7).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from s3_events_handler.adapters.redaction import Redactor

# Shorter secrets are not masked in log output: a two-letter one would mask that pair of
# letters in every line, and the log would say nothing any more.
SHORTEST_MASKED_SECRET = 4

# The LogRecord attribute `with_fields` puts a line's fields under.
_FIELDS = "s3_events_fields"
# A text value shown as it is after `key=`; anything else is quoted as JSON.
_PLAIN = re.compile(r"[^\s\"=\\]+")
# Line breaks JSON leaves as they are but readers split lines on (Python's splitlines(),
# JavaScript): escaped, so a line stays one line whatever an object key holds.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def with_fields(fields: Mapping[str, object]) -> dict[str, Any]:
    """`extra` for a log call whose line carries `fields` beside its message."""
    return {_FIELDS: dict(fields)}


def fields_of(record: logging.LogRecord) -> dict[str, object]:
    fields: dict[str, object] = getattr(record, _FIELDS, None) or {}
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line, so the log shipper needs no parsing rules.

    A line's fields are keys of their own; they never replace the four every line has.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in fields_of(record).items():
            entry.setdefault(name, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _json(entry)


class TextFormatter(logging.Formatter):
    """For a person at a terminal: the message, then the line's fields as `key=value`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        line = super().formatMessage(record)
        pairs = [f"{name}={_text(value)}" for name, value in fields_of(record).items()]
        return " ".join([line, *pairs])


def _text(value: object) -> str:
    """`None` as `-`; text with spaces, quotes or `=` quoted, so the pairs split cleanly."""
    if value is None:
        return "-"
    text = str(value)
    return text if _PLAIN.fullmatch(text) else _json(text)


def _json(value: object) -> str:
    """JSON on one line, readable (not ASCII-escaped) but for line breaks."""
    return json.dumps(value, ensure_ascii=False, default=str).translate(_LINE_BREAKS)


class MaskSecrets(logging.Filter):
    """Last line of defence: a secret that slipped into a message is masked before output."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._redactor = Redactor(secrets, shortest=SHORTEST_MASKED_SECRET)

    def filter(self, record: logging.LogRecord) -> bool:
        if self._redactor:
            mask = self._redactor.redact
            message = mask(record.getMessage())
            if record.exc_info:
                exception = logging.Formatter().formatException(record.exc_info)
                message = f"{message}\n{mask(exception)}"
                record.exc_info = None
                record.exc_text = None
            record.msg, record.args = message, None
            fields = fields_of(record)
            if fields:
                masked = {k: mask(v) if isinstance(v, str) else v for k, v in fields.items()}
                setattr(record, _FIELDS, masked)
        return True


def configure_logging(level: str, fmt: str, secrets: Iterable[str] = ()) -> None:
    """Route every logger to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    handler.addFilter(MaskSecrets(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Neither format shows the process: no record needs to ask the kernel for its id.
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # pika logs every connection hiccup with a traceback; its errors reach our code as
    # exceptions, which log them in one line. Its own account is for debugging.
    logging.getLogger("pika").setLevel(
        logging.DEBUG if root.level <= logging.DEBUG else logging.CRITICAL
    )
    # psycopg's pool logs every connection lent and given back at INFO: only when debugging.
    # Its warnings (a connection found closed, a reconnect that failed) stay.
    logging.getLogger("psycopg.pool").setLevel(
        logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING
    )

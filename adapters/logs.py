"""Log output: one JSON object a line in the keys of meemoo's other services (contract §7,
docs/operations.md "Logs"), or plain text, with known secrets masked.

A line's fields (`extra=with_fields(...)`, and those of the event its thread handles,
`application.log_context`) are JSON keys of their own, or `key=value` after the text.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from s3_events_handler.application.log_context import event_fields
from s3_events_handler.application.reasons import Redactor

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
# What the text format escapes in a message: C0 and C1 controls, DEL and the Unicode line
# and paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def with_fields(fields: Mapping[str, object]) -> dict[str, Any]:
    """`extra` for a log call whose line carries `fields` beside its message."""
    return {_FIELDS: dict(fields)}


def fields_of(record: logging.LogRecord) -> dict[str, object]:
    fields: dict[str, object] = getattr(record, _FIELDS, None) or {}
    return fields


def timestamp(record: logging.LogRecord) -> str:
    """ISO 8601 in UTC, as structlog's TimeStamper(fmt="iso") writes it."""
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


class _LineFormatter(logging.Formatter):
    """What every format writes of a line: its message, its fields (those of the event its
    thread is handling, then its own, which win) and its traceback, with known secrets masked
    (the last line of defence: a secret that slipped into a message never leaves)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._mask = Redactor(secrets, shortest=SHORTEST_MASKED_SECRET).redact

    def parts(self, record: logging.LogRecord) -> tuple[str, dict[str, object], str | None]:
        mask = self._mask
        fields = {**event_fields(), **fields_of(record)}
        masked = {name: mask(v) if isinstance(v, str) else v for name, v in fields.items()}
        traceback = self.formatException(record.exc_info) if record.exc_info else None
        return mask(record.getMessage()), masked, traceback and mask(traceback)


class JsonFormatter(_LineFormatter):
    """One JSON object a line; a line's fields never replace the five every line has."""

    def format(self, record: logging.LogRecord) -> str:
        message, fields, traceback = self.parts(record)
        entry: dict[str, object] = {
            "message": message,
            "level": record.levelname.lower(),
            "logger": record.name,
            "timestamp": timestamp(record),
            "source": f"{record.pathname}:{record.funcName}:{record.lineno}",
        }
        for name, value in fields.items():
            entry.setdefault(name, value)
        if traceback is not None:
            entry["exc_info"] = traceback
        return _json(entry)


class TextFormatter(_LineFormatter):
    """For a person at a terminal: the message, then the line's fields as `key=value`, all
    escaped so nothing from outside starts a line; a traceback on lines that begin `  | `."""

    def format(self, record: logging.LogRecord) -> str:
        message, fields, traceback = self.parts(record)
        pairs = [f"{name}={_text(value)}" for name, value in fields.items()]
        line = " ".join(
            [
                timestamp(record),
                record.levelname.lower(),
                f"{record.name}:",
                _escaped(message),
                *pairs,
            ]
        )
        if traceback is None:
            return line
        return "\n".join([line, *(f"  | {_escaped(part)}" for part in traceback.splitlines())])


def _text(value: object) -> str:
    """`None` as `-`; text with spaces, quotes or `=` quoted, so the pairs split cleanly."""
    if value is None:
        return "-"
    text = str(value)
    return text if _PLAIN.fullmatch(text) else _json(text)


def _escaped(text: str) -> str:
    """Control characters and line breaks as escapes: the text stays on its line."""
    return _CONTROL.sub(lambda found: found.group().encode("unicode_escape").decode(), text)


def _json(value: object) -> str:
    """JSON on one line, readable (not ASCII-escaped) but for line breaks."""
    return json.dumps(value, ensure_ascii=False, default=str).translate(_LINE_BREAKS)


def configure_logging(
    level: str, fmt: str, secrets: Iterable[str] = (), *, stream: TextIO | None = None
) -> None:
    """Route every logger to `stream` in the chosen format: standard output, where the
    platform's log shipper reads a service's lines, unless a command writes its own output
    there (then standard error)."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter(secrets) if fmt == "json" else TextFormatter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Neither format shows the process: no record needs to ask the kernel for its id.
    logging.logProcesses = False
    logging.logMultiprocessing = False
    debugging = root.level <= logging.DEBUG
    # pika logs every connection hiccup with a traceback; its errors reach our code as
    # exceptions, which log them in one line. Its own account is for debugging.
    logging.getLogger("pika").setLevel(logging.DEBUG if debugging else logging.CRITICAL)
    # psycopg's pool logs every connection lent and given back at INFO: only when debugging.
    # Its warnings (a connection found closed, a reconnect that failed) stay.
    logging.getLogger("psycopg.pool").setLevel(logging.DEBUG if debugging else logging.WARNING)

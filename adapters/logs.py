"""Log output: one JSON object a line (or plain text), with known secrets masked."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime

from s3_events_handler.adapters.redaction import Redactor

# Shorter secrets are not masked in log output: a two-letter one would mask that pair of
# letters in every line, and the log would say nothing any more.
SHORTEST_MASKED_SECRET = 4


class JsonFormatter(logging.Formatter):
    """One JSON object per line, so the log shipper needs no parsing rules."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


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
        return True


def configure_logging(level: str, fmt: str, secrets: Iterable[str] = ()) -> None:
    """Route every logger to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
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

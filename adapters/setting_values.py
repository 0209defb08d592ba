"""How a setting's text becomes its type, and what it may be: each converter raises
`ValueError` with what the value must be, which `adapters/config.py` reports under the
variable's name."""

from __future__ import annotations

import math
from collections.abc import Callable

LOG_FORMATS = ("json", "text")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
TRUE_WORDS = ("true", "1", "yes")
FALSE_WORDS = ("false", "0", "no")


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError("must be at least 1")
    return number


def port_or_off(value: str) -> int:
    """A TCP port, or 0 for none."""
    number = int(value)
    if not 0 <= number <= 65535:
        raise ValueError("must be a port (1 to 65535), or 0 for off")
    return number


# Each worker may hold an FTP connection and an HTTP connection to each service of its own.
MAX_CONCURRENCY = 64


def concurrency(value: str) -> int:
    workers = positive_int(value)
    if workers > MAX_CONCURRENCY:
        raise ValueError(f"must be at most {MAX_CONCURRENCY}")
    return workers


def prefetch(value: str) -> int | None:
    """Messages the broker hands over before any is acked; empty: one per worker (CONCURRENCY)."""
    return positive_int(value) if value.strip() else None


def positive_float(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise ValueError("must be above 0")
    return number


def retention_days(value: str) -> float:
    """Days, fractions allowed; under one day a redelivered event could outlive its PID."""
    days = float(value)
    if not 1 <= days < math.inf:
        raise ValueError("must be at least 1 day, so the ledger outlives the longest retry chain")
    return days


def claim_lease(value: str) -> float:
    """At least 3 s: the heartbeat renews a claim every third of it, one statement each."""
    seconds = positive_float(value)
    if seconds < 3:
        raise ValueError("must be at least 3 seconds")
    return seconds


def delays(value: str) -> tuple[int, ...]:
    delays = tuple(positive_int(part.strip()) for part in value.split(","))
    if not delays:
        raise ValueError("needs at least one delay")
    return delays


def flag(value: str) -> bool:
    """true/false, 1/0, yes/no in any case; anything else may be a typo that turns TLS off."""
    word = value.strip().lower()
    if word in TRUE_WORDS or word in FALSE_WORDS:
        return word in TRUE_WORDS
    raise ValueError("must be true or false (or 1/0, yes/no)")


def choice(options: tuple[str, ...], *, upper: bool = False) -> Callable[[str], str]:
    def convert(value: str) -> str:
        value = value.upper() if upper else value.lower()
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return value

    return convert

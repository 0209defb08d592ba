"""How a setting's text becomes its type: each converter raises `ValueError` saying what the
value must be, which `adapters/config.py` reports under the variable's name."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

N = TypeVar("N", int, float)

TRUE_WORDS = ("true", "1", "yes")
FALSE_WORDS = ("false", "0", "no")
# Each worker may hold an FTP connection and an HTTP connection to each service of its own.
MAX_CONCURRENCY = 64


def number(kind: Callable[[str], N], fits: Callable[[N], bool], must: str) -> Callable[[str], N]:
    """A number of `kind` that `fits`; any other "must be `must`"."""

    def convert(value: str) -> N:
        number = kind(value)
        if not fits(number):
            raise ValueError(f"must be {must}")
        return number

    return convert


positive_int = number(int, lambda n: n >= 1, "at least 1")
port_or_off = number(int, lambda n: 0 <= n <= 65535, "a port (1 to 65535), or 0 for off")
concurrency = number(int, lambda n: 1 <= n <= MAX_CONCURRENCY, f"from 1 to {MAX_CONCURRENCY}")
positive_float = number(float, lambda n: n > 0, "above 0")
# Under one day a redelivered event could outlive its PID.
retention_days = number(
    float,
    lambda days: 1 <= days < math.inf,
    "at least 1 day, so the ledger outlives the longest retry chain",
)
# The heartbeat renews a claim every third of it, one statement each.
claim_lease = number(float, lambda seconds: seconds >= 3, "at least 3 seconds")


def prefetch(value: str) -> int | None:
    """Empty: one message in hand per worker (CONCURRENCY)."""
    return positive_int(value) if value.strip() else None


def delays(value: str) -> tuple[int, ...]:
    return tuple(positive_int(part) for part in value.split(","))


def flag(value: str) -> bool:
    """true/false, 1/0, yes/no in any case; anything else may be a typo that turns TLS off."""
    word = value.strip().lower()
    if word in TRUE_WORDS or word in FALSE_WORDS:
        return word in TRUE_WORDS
    raise ValueError("must be true or false (or 1/0, yes/no)")


def checked(check: Callable[[str], object]) -> Callable[[str], str]:
    """The text itself, once `check` (which raises `ValueError` saying why) accepts it."""

    def convert(value: str) -> str:
        check(value)
        return value

    return convert


def choice(*options: str, upper: bool = False) -> Callable[[str], str]:
    def convert(value: str) -> str:
        value = value.upper() if upper else value.lower()
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return value

    return convert

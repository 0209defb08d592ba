"""A clock that stands still until a test moves it."""

from __future__ import annotations


class Clock:
    """Called, it answers `now` (1000.0 to begin with); a test moves it by changing `now`."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

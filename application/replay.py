"""What replaying a dead letter means, whatever carries it: which ones, and with what headers."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from s3_events_handler.application.handler import (
    ATTEMPT_HEADER,
    DEAD_LETTERED_AT_HEADER,
    ERROR_HEADER,
    STAGE_HEADER,
)

# A replayed event starts over: a full set of attempts, and no verdict of the last run to
# mislead whoever reads it next. `x-pid` stays, so the replay reuses the PID minted before.
CLEARED_ON_REPLAY = (ATTEMPT_HEADER, ERROR_HEADER, STAGE_HEADER, DEAD_LETTERED_AT_HEADER)


def replay_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    """`headers` without the attempt count and the dead-letter verdict; the rest kept."""
    return {name: value for name, value in headers.items() if name not in CLEARED_ON_REPLAY}


@dataclass(frozen=True)
class Selection:
    """Which dead letters a replay takes: all of them, those with one of `ids`, or those whose
    reason matches `reason`."""

    ids: frozenset[str] = frozenset()
    reason: re.Pattern[str] | None = None

    @classmethod
    def everything(cls) -> Selection:
        return cls()

    @classmethod
    def by_ids(cls, ids: Collection[str]) -> Selection:
        if not ids:
            raise ValueError("choosing by id needs at least one id")
        return cls(ids=frozenset(ids))

    @classmethod
    def by_reason_text(cls, text: str) -> Selection:
        """A piece of the reason, any case: what an operator copies from `dead-letters list`."""
        return cls(reason=re.compile(re.escape(text), re.IGNORECASE))

    @classmethod
    def by_reason_pattern(cls, pattern: str) -> Selection:
        """A regular expression searched in the reason; raises `re.error` when it is not one."""
        return cls(reason=re.compile(pattern))

    def chooses(self, message_id: str, reason: str | None) -> bool:
        if self.ids:
            return message_id in self.ids
        if self.reason is not None:
            return reason is not None and self.reason.search(reason) is not None
        return True

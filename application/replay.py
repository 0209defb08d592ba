"""What replaying or dropping dead letters means, whatever carries them: which ones."""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field


@dataclass
class Choosing:
    """Which dead letters a replay or a drop takes, applied to them as they come, head first:
    all of them, those with one of `ids`, or those whose reason matches `reason`; at most
    `limit` of them. It notes which of the ids asked for were met, so that one asked for and
    not there is reported rather than passed over in silence."""

    ids: frozenset[str] = frozenset()
    reason: re.Pattern[str] | None = None
    limit: int | None = None
    taken: int = 0
    met: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ValueError("a limit takes at least one")

    @classmethod
    def by_ids(cls, ids: Collection[str], *, limit: int | None = None) -> Choosing:
        if not ids:
            raise ValueError("choosing by id needs at least one id")
        return cls(ids=frozenset(ids), limit=limit)

    @classmethod
    def by_reason_text(cls, text: str, *, limit: int | None = None) -> Choosing:
        """A piece of the reason, any case: what an operator copies from `dead-letters list`."""
        return cls(reason=re.compile(re.escape(text), re.IGNORECASE), limit=limit)

    @classmethod
    def by_reason_pattern(cls, pattern: str, *, limit: int | None = None) -> Choosing:
        """A regular expression searched in the reason; raises `re.error` when it is not one."""
        return cls(reason=re.compile(pattern), limit=limit)

    def chooses(self, message_id: str, reason: str | None) -> bool:
        """Whether this dead letter is one of those asked for, the limit aside."""
        if self.ids:
            return message_id in self.ids
        if self.reason is not None:
            return reason is not None and self.reason.search(reason) is not None
        return True

    def take(self, message_id: str, reason: str | None) -> bool:
        """Whether this dead letter is taken: chosen, and the limit not reached yet."""
        if message_id in self.ids:
            self.met.add(message_id)
        if self.enough or not self.chooses(message_id, reason):
            return False
        self.taken += 1
        return True

    @property
    def enough(self) -> bool:
        """The limit is reached: nothing more is taken."""
        return self.limit is not None and self.taken >= self.limit

    def not_found(self) -> list[str]:
        """The ids asked for that no dead letter met so far had, in order."""
        return sorted(self.ids - self.met)

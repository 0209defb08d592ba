"""Which retry queue a failed message waits in, and how often it may fail (contract §6)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    """The retry queues' delays in seconds, shortest first (`RETRY_DELAYS`), and the attempts
    an event gets before it is dead-lettered (`RETRY_MAX_ATTEMPTS`)."""

    delays: tuple[int, ...] = (10, 30, 90, 270, 810)
    max_attempts: int = 8

    def delay_after(self, attempt: int) -> int:
        """The wait after failed attempt `attempt`; attempts past the last delay stay on it."""
        return self.delays[min(attempt, len(self.delays)) - 1]

    def queue_delay(self, seconds: int) -> int:
        """The delay whose queue holds a wait of `seconds` (only those delays have a queue): the
        nearest not below it, else the longest."""
        return min((delay for delay in self.delays if delay >= seconds), default=max(self.delays))

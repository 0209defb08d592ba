"""An attempt's hold on its event in the ledger (contract §6: one event, one worker, across
every consumer)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import TracebackType

from s3_events_handler.domain.errors import S3EventsHandlerError
from s3_events_handler.domain.model import LedgerEntry, Step
from s3_events_handler.domain.ports import Ledger

log = logging.getLogger(__name__)


def nobody() -> None:
    """Where a recall is told when nobody counts them."""


class EventClaim:
    """This consumer's hold on one event in the ledger, from before its first side effect to
    after its last.

    `with EventClaim(ledger, identity) as claim:` claims the event (raising
    `ClaimedElsewhere` while another consumer holds it); `claim.entry` is what the ledger
    knew of it, and `on_recall` is told when it knew the event from before (a retry, a
    redelivery or a duplicate). `finish(step)` records the last step and lets go in one
    write. Leaving the block any other way lets go without a step. A release that fails is
    logged, not raised: the claim then lapses with its lease, and the event's outcome stands.
    """

    def __init__(
        self, ledger: Ledger, identity: str, on_recall: Callable[[], None] = nobody
    ) -> None:
        self._ledger = ledger
        self._on_recall = on_recall
        self.identity = identity
        self.entry: LedgerEntry | None = None
        self._held = False

    def __enter__(self) -> EventClaim:
        self.entry = self._ledger.claim(self.identity)
        self._held = not self.finished
        if self.entry is not None:
            self._on_recall()
        return self

    @property
    def finished(self) -> bool:
        """The ledger says the event was seen through: nothing is claimed, nothing to do."""
        return self.entry is not None and self.entry.step.finished

    def finish(self, step: Step) -> None:
        self._held = False
        self._ledger.release(self.identity, step)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self._held:
            return
        self._held = False
        try:
            self._ledger.release(self.identity)
        except S3EventsHandlerError as error:
            log.warning("the claim on %s is left to lapse: %s", self.identity, error)

"""Failure types, and what a failure carries. The application decides ack, retry or
dead-letter from the permanent/transient split alone, counts a failure against the
`system` it came from, and reports the stage and PID the attempt had reached."""

from __future__ import annotations

import enum
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from s3_events_handler.domain.model import Stage


class System(enum.StrEnum):
    """The outside systems whose failures are counted apart (contract §7)."""

    MEDIAHAVEN = "mediahaven"
    PID = "pid"
    ORGANISATIONS = "organisations"
    FTP = "ftp"
    BROKER = "broker"
    LEDGER = "ledger"


class S3EventsHandlerError(Exception):
    """Base of every failure the service knows how to classify.

    `system` is the outside system that failed or refused, as the adapter that raised
    it names it; None when the failure is the event's own (bad input) or ours.
    """

    def __init__(self, message: str, *, system: System | None = None) -> None:
        super().__init__(message)
        self.system = system


class PermanentError(S3EventsHandlerError):
    """Trying again cannot help: the event goes to the dead-letter queue."""


class BadInput(PermanentError):
    """The event, or a value derived from it, is not something the service can act on."""


class Rejected(PermanentError):
    """An outside system refused the request for good (a 4xx, a missing folder, no MAM label)."""


class TransientError(S3EventsHandlerError):
    """Likely to succeed later: the event waits in a retry queue."""


class ServiceUnavailable(TransientError):
    """An outside system did not answer, answered 5xx/429, or answered nonsense.

    `retry_after` is how long the system asked us to wait (a 429's Retry-After), if it did.
    """

    def __init__(
        self, message: str, *, system: System | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, system=system)
        self.retry_after = retry_after


class SearchTooBroad(ServiceUnavailable):
    """A search matched more pages than one may read (`MAX_SEARCH_PAGES`, contract §4.1).
    Transient, so the event waits where an operator sees why."""

    def __init__(self, max_pages: int, query: str) -> None:
        super().__init__(
            f"search too broad: more than {max_pages} pages of results for {query}",
            system=System.MEDIAHAVEN,
        )


class EssenceNotArchivedYet(TransientError):
    """A collateral arrived before the essence it belongs to was archived."""


class ClaimedElsewhere(TransientError):
    """Another consumer holds the event's claim in the ledger, or took it over after this one's
    lease lapsed (contract §6). Not a failure of the attempt: the event comes back after the
    shortest delay, its attempt count unchanged."""


@contextmanager
def at_stage(stage: Stage, *, pid: str | None = None) -> Iterator[None]:
    """Runs one stage of an attempt at an event: whatever escapes it (a bug too) says the
    stage it failed at and, once the attempt has one, the PID; `stage_of` and `pid_of` read
    them back. Nested, the innermost stage names the failure."""
    try:
        yield
    except Exception as error:
        carried = vars(error)
        carried.setdefault("stage", stage)
        if pid is not None:
            carried.setdefault("pid", pid)
        raise


def stage_of(error: BaseException) -> Stage | None:
    """The stage `error` escaped from, if it escaped an attempt's stage."""
    stage: Stage | None = vars(error).get("stage")
    return stage


def pid_of(error: BaseException) -> str | None:
    """The PID the attempt `error` ended had by then, if it had one."""
    pid: str | None = vars(error).get("pid")
    return pid

"""Failure types. The application decides ack, retry or dead-letter from this split alone."""


class S3EventsHandlerError(Exception):
    """Base of every failure the service knows how to classify."""


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

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SearchTooBroad(ServiceUnavailable):
    """A search matched more pages of results than one may read (`MAX_SEARCH_PAGES`, contract §4.1).

    Transient, so that the event waits where an operator sees why (a key that matches
    half the archive, a bound set too low) rather than the service guessing from part of
    the results.
    """

    def __init__(self, max_pages: int, query: str) -> None:
        super().__init__(f"search too broad: more than {max_pages} pages of results for {query}")


class EssenceNotArchivedYet(TransientError):
    """A collateral arrived before the essence it belongs to was archived."""


class ClaimedElsewhere(TransientError):
    """Another consumer holds the event's claim in the ledger (contract §6), or took it over after
    this one's lease lapsed: this consumer does nothing more for the event now.

    Not a failure of the attempt: the event goes back on the retry path with the shortest
    delay and its attempt count unchanged.
    """

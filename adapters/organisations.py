"""Content partners' MAM labels from meemoo's Organisations GraphQL API, cached (contract §4.3)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

from s3_events_handler.adapters.http_calls import HttpService
from s3_events_handler.domain.errors import Rejected, System
from s3_events_handler.domain.ports import Organisations

# The OR-id travels as a variable, so no id can change the query.
CP_NAME_QUERY = "query cp($id: String!) { organizations(id: $id) { mam_label } }"


class NoMamLabel(Rejected):
    """The API answered: it knows no such organisation, or the organisation has no MAM label."""

    def __init__(self, message: str) -> None:
        super().__init__(message, system=System.ORGANISATIONS)


class OrganisationsApi(HttpService, Organisations):
    """Looks up the MAM label of an OR-id.

    No organisation or no label is permanent for the event; an unreachable or
    confused API is transient. A 5xx or a connection error is tried again a couple
    of times (the query is idempotent).
    """

    name = "Organisations API"
    system = System.ORGANISATIONS
    # Client errors that say "not now" rather than "never": refused credentials are
    # fixed by an operator, and the events should wait for that, not be dead-lettered.
    # (A 429 is transient already on the way in: see `HttpService.send`.)
    transient_client_errors = frozenset({401, 403, 408})

    def cp_name(self, or_id: str) -> str:
        """`{"data": {"organizations": [{"mam_label": "VRT"}]}}` -> `VRT`."""
        what = f"the lookup of {or_id}"
        body = {"query": CP_NAME_QUERY, "variables": {"id": or_id}}
        response = self.send("POST", what=what, safe_to_repeat=True, json=body)
        answer = self.json(self.succeeded(response, what), what, dict)
        if answer.get("errors"):
            raise self.unavailable(
                f"reported errors for {or_id}: {self.snippet(str(answer['errors']))}"
            )
        data = answer.get("data")
        organisations = data.get("organizations") if isinstance(data, dict) else None
        if not isinstance(organisations, list):
            raise self.unavailable(f"answer for {or_id} has no organizations")
        if not organisations:
            raise NoMamLabel(f"no organisation {or_id} in the Organisations API")
        first = organisations[0]
        label = first.get("mam_label") if isinstance(first, dict) else None
        if label is not None and not isinstance(label, str):
            raise self.unavailable(f"gave a mam_label that is not text for {or_id}")
        if not label or not label.strip():
            raise NoMamLabel(f"organisation {or_id} has no MAM label")
        return label


class CachedOrganisations(Organisations):
    """Remembers each found label for `ttl_seconds`, so an event does not wait on the API.

    Failures are not remembered: a label added later, or an API that recovers, is
    seen at the next lookup. Shared by the consumer's workers: those missing the same
    label wait for one lookup and share its answer, instead of each asking the API.
    """

    def __init__(
        self,
        inner: Organisations,
        *,
        ttl_seconds: float = 3600,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self._ttl = ttl_seconds
        self._clock = clock
        # By OR-id: the lookup under way or found, and when it started; a failed one is dropped.
        self._lookups: dict[str, tuple[Future[str], float]] = {}
        self._lock = threading.Lock()

    def cp_name(self, or_id: str) -> str:
        asking = False
        with self._lock:
            lookup = self._lookups.get(or_id)
            if lookup is None or (lookup[0].done() and self._clock() - lookup[1] >= self._ttl):
                lookup = self._lookups[or_id] = (Future(), self._clock())
                asking = True
        answer = lookup[0]
        if asking:
            try:
                answer.set_result(self._inner.cp_name(or_id))
            except BaseException as error:
                answer.set_exception(error)
                with self._lock:
                    if self._lookups.get(or_id) is lookup:
                        del self._lookups[or_id]
        return answer.result()  # the same label, or the same failure, as the one asking

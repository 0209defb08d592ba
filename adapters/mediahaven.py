"""MediaHaven's records over its REST API v2 (contract §4.1): search, relation update, delete.
Each call carries a token from `mediahaven_auth`."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import quote, urlencode

import requests

from s3_events_handler.adapters import sidecar_xml
from s3_events_handler.adapters.http_calls import HttpService, number_in
from s3_events_handler.adapters.mediahaven_auth import MediaHavenTokens
from s3_events_handler.domain.errors import SearchTooBroad, ServiceUnavailable, System
from s3_events_handler.domain.model import DEFAULT_MAX_SEARCH_PAGES, Query, Record
from s3_events_handler.domain.ports import ArchiveRecords

log = logging.getLogger(__name__)

RECORDS_PATH = "mediahaven-rest-api/v2/records"
# Pauses before the 2nd and 3rd try of an idempotent request, when no Retry-After says otherwise.
BACKOFF_SECONDS = (0.5, 1.0)
# All pauses of one request together; the retry queue does the long waits.
RETRY_BUDGET_SECONDS = 3.0


def render_query(query: Query) -> str:
    """`+(k1:"v1" k2:"v2") +(k3:"v3")`: an AND of OR-groups, every value quoted and escaped."""
    if not query.groups or not all(query.groups):
        raise ValueError("a MediaHaven query needs at least one group, and no empty group")
    return " ".join(
        "+(" + " ".join(f'{term.field}:"{_escape(term.value)}"' for term in group) + ")"
        for group in query.groups
    )


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


class MediaHavenRecords(HttpService, ArchiveRecords):
    """The `ArchiveRecords` port over MediaHaven's REST API v2.

    Safe to share between threads: a search keeps its pages to itself, and the token
    is renewed under a lock. `max_retry_wait` is the longest Retry-After one call
    waits out; a longer one is left to the retry queue. `max_pages` bounds every search.
    """

    name = "MediaHaven"
    system = System.MEDIAHAVEN
    pauses = BACKOFF_SECONDS

    def __init__(
        self,
        *,
        session: requests.Session,
        base_url: str,
        client_id: str,
        client_secret: str,
        username: str,
        password: str,
        timeout: float,
        page_size: int = 100,
        max_pages: int = DEFAULT_MAX_SEARCH_PAGES,
        max_retry_wait: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if page_size < 1 or max_pages < 1:
            raise ValueError(
                f"page_size and max_pages must be at least 1: {page_size}, {max_pages}"
            )
        super().__init__(
            session=session, url=base_url.rstrip("/") + "/", timeout=timeout, sleep=sleep
        )
        self.max_retry_after = max_retry_wait
        self.retry_budget = max(RETRY_BUDGET_SECONDS, max_retry_wait)
        self._page_size = page_size
        self._max_pages = max_pages
        self._tokens = MediaHavenTokens(
            http=self,
            client_id=client_id,
            client_secret=client_secret,
            username=username,
            password=password,
            clock=clock,
        )

    def secrets(self) -> list[str | None]:
        return self._tokens.secrets()

    # -- the port -------------------------------------------------------------------------

    def search(self, query: Query) -> Iterator[Record]:
        """A page is asked for only when the caller has read the one before; past `max_pages`
        pages, `SearchTooBroad`. Only the fragment ids already given are kept, so a record
        that moves to the next page while they are read comes once."""
        q = render_query(query)
        given: set[str] = set()
        start = 0
        for _ in range(self._max_pages):
            params = urlencode(
                {"q": q, "startIndex": start, "nrOfResults": self._page_size}, quote_via=quote
            )
            page = self.json(
                self._call("GET", f"{RECORDS_PATH}?{params}", what="search"), "search", dict
            )
            results = page.get("Results")
            if not isinstance(results, list):
                raise self.unavailable("search answered without a Results list")
            for record in _records(results):
                if record.fragment_id not in given:
                    given.add(record.fragment_id)
                    yield record
            following = _next_start(page, start, len(results))
            if following is None:
                return
            start = following
        raise SearchTooBroad(self._max_pages, q)

    def add_relation(self, fragment_id: str, related_pid: str, reason: str) -> None:
        # A POST, not idempotent as far as we know: not sent again within the call; a
        # failure is reported and the retry queue tries again.
        self._call(
            "POST",
            self._record_url(fragment_id),
            what=f"update of record {fragment_id}",
            files={
                "metadata": (
                    "metadata.xml",
                    sidecar_xml.render_relation(related_pid),
                    "application/xml",
                ),
                "reason": (None, reason),
            },
        )

    def delete(self, fragment_id: str, reason: str) -> None:
        response = self._call(
            "DELETE",
            self._record_url(fragment_id),
            what=f"delete of record {fragment_id}",
            json={"Reason": reason},
            gone_is_fine=True,
        )
        if response.status_code == 404:
            log.debug("MediaHaven record %s was already deleted", fragment_id)

    # -- requests ---------------------------------------------------------------------------

    def _record_url(self, fragment_id: str) -> str:
        return f"{RECORDS_PATH}/{quote(fragment_id, safe='')}"

    def _call(
        self, method: str, path: str, *, what: str, gone_is_fine: bool = False, **body: Any
    ) -> requests.Response:
        """One authorised request; its answer, or the failure `HttpService.succeeded` makes
        of it. Only an idempotent method (GET, DELETE; not POST) is sent again after a
        transient failure."""
        response = self._tokens.send(
            method, path, what=what, safe_to_repeat=method != "POST", **body
        )
        return self.succeeded(response, what, also_fine={404} if gone_is_fine else ())


def _next_start(page: Mapping[str, Any], asked_start: int, received: int) -> int | None:
    """Where the next page starts, `None` when this was the last one."""
    start = _count(page.get("StartIndex"), asked_start)
    returned = _count(page.get("NrOfResults"), received)
    total = _count(page.get("TotalNrOfResults"), start + returned)
    following = start + returned
    if following >= total:
        return None
    if returned == 0 or following <= asked_start:
        # Stopping here would pass a partial result off as complete; deletes rely on it.
        raise ServiceUnavailable(
            f"MediaHaven search paging went nowhere: page at {start} held {returned} "
            f"of {total} results",
            system=System.MEDIAHAVEN,
        )
    return following


def _count(value: object, default: int) -> int:
    number = number_in(value)
    return int(number) if number is not None and number >= 0 and number.is_integer() else default


def _records(results: Iterable[object]) -> Iterable[Record]:
    for result in results:
        if not isinstance(result, dict):
            log.warning("MediaHaven search result is not an object; skipped")
            continue
        internal = _section(result, "Internal")
        dynamic = _section(result, "Dynamic")
        fragment_id = _text(internal.get("FragmentId"))
        if fragment_id is None:
            log.warning(
                "MediaHaven search result without a FragmentId skipped (PID %s)",
                _text(dynamic.get("PID")),
            )
            continue
        yield Record(
            fragment_id=fragment_id,
            is_fragment=_flag(internal.get("IsFragment")),
            pid=_text(dynamic.get("PID")),
            local_id=_text(dynamic.get("dc_identifier_localid")),
            s3_object_key=_text(dynamic.get("s3_object_key")),
            s3_bucket=_text(dynamic.get("s3_bucket")),
            md5=_text(dynamic.get("md5")) or _text(_section(result, "Technical").get("Md5")),
        )


def _section(result: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    section = result.get(name)
    return section if isinstance(section, dict) else {}


def _text(value: object) -> str | None:
    """A single value as text; absent, empty or many-valued fields count as not there."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        return value or None
    if isinstance(value, int | float):
        return str(value)
    return None


def _flag(value: object) -> bool:
    if isinstance(value, bool):
        return value
    return isinstance(value, str) and value.strip().lower() == "true"

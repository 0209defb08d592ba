"""The event a thread is working on, for every log line written meanwhile (contract §7): a
warning from deep in an adapter is only useful if it says which event it is about. The
handler binds the event's fields here; the log output adds them to every line. Standard
`contextvars`, so each worker thread has its own and this layer needs no logging library.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType

_NONE: Mapping[str, object] = MappingProxyType({})
_fields: ContextVar[Mapping[str, object]] = ContextVar("s3_events_log_fields", default=_NONE)


@contextmanager
def event_log_context(**fields: object) -> Iterator[None]:
    """Log lines written inside carry `fields` (those not None); outside, as before."""
    token = _fields.set(_known(fields))
    try:
        yield
    finally:
        _fields.reset(token)


def bind_event_fields(**fields: object) -> None:
    """Add to the fields of the `event_log_context` around this call, as they become known."""
    _fields.set({**_fields.get(), **_known(fields)})


def event_fields() -> Mapping[str, object]:
    """The fields bound for the event this thread works on; none outside an event."""
    return _fields.get()


def _known(fields: Mapping[str, object]) -> dict[str, object]:
    return {name: value for name, value in fields.items() if value is not None}

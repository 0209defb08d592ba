"""The events a run feeds the service: the golden essence event, made unique per copy."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "event-essence-created.json"


@dataclass(frozen=True, slots=True)
class Event:
    """One message body and its request id, which the service carries as the correlation id."""

    request_id: str
    body: bytes


def essence_events(count: int, tag: str) -> list[Event]:
    """`count` copies of the golden essence event with their own key and request id.

    `tag` keeps the runs of one bench apart: the ledger would otherwise take a later
    run's events for redeliveries of an earlier run's.
    """
    message = json.loads(GOLDEN.read_text())
    events = []
    for n in range(count):
        copied = copy.deepcopy(message)
        record = copied["Records"][0]
        request_id = f"bench-{tag}-{n:07d}"
        record["responseElements"]["x-viaa-request-id"] = request_id
        record["s3"]["object"]["key"] = f"bench-{tag}-{n:07d}.MXF"
        events.append(Event(request_id, json.dumps(copied).encode()))
    return events

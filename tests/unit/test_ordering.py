"""Which messages wait for each other: one object's events in order, everything else at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from s3_events_handler.application.ordering import Unordered, ordering_key

ESSENCE = "event-essence-created.json"


def with_records(*records: object) -> bytes:
    return json.dumps({"Records": list(records)}).encode()


def record(bucket: object, key: object) -> dict[str, object]:
    return {"s3": {"bucket": {"name": bucket}, "object": {"key": key}}}


def test_an_event_is_ordered_by_its_bucket_and_key(examples: Path) -> None:
    golden = json.loads((examples / ESSENCE).read_text())["Records"][0]
    assert ordering_key((examples / ESSENCE).read_bytes()) == (
        golden["s3"]["bucket"]["name"],
        golden["s3"]["object"]["key"],
    )


def test_a_create_and_a_remove_of_one_object_share_a_key_other_objects_do_not() -> None:
    created = {**record("b", "clip.mxf"), "eventName": "ObjectCreated:Put"}
    removed = {**record("b", "clip.mxf"), "eventName": "ObjectRemoved:Delete"}
    assert ordering_key(with_records(created)) == ordering_key(with_records(removed))
    assert ordering_key(with_records(record("b", "clip.mxf"))) != ordering_key(
        with_records(record("other-bucket", "clip.mxf"))
    )
    assert ordering_key(with_records(record("b", "clip.mxf"))) != ordering_key(
        with_records(record("b", "clip.mxf.bak"))
    )


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        b'{"Records": "nope"}',
        b'{"Records": []}',
        with_records(record("b", "one"), record("b", "two")),  # split first, then ordered
        with_records(record("b", None)),
        with_records(record(7, "k")),
        with_records("a record that is a string"),
        b"[" * 100_000,  # too deep to parse
    ],
)
def test_a_message_that_names_no_single_object_waits_for_nothing(body: bytes) -> None:
    first, second = ordering_key(body), ordering_key(body)
    assert isinstance(first, Unordered)
    assert first != second  # the same body twice: still not ordered with each other

"""Reading and validating one S3 notification record (contract §2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from s3_events_handler.domain.errors import BadInput
from s3_events_handler.domain.events import parse_record
from s3_events_handler.domain.model import EventKind
from tests.unit.builders import event_of, golden_event, record_of

ESSENCE = "event-essence-created.json"


def test_reads_the_fields_the_flows_need(examples: Path) -> None:
    event = event_of(golden_event(examples, ESSENCE))
    assert event.kind is EventKind.CREATED
    assert event.or_id == "OR-rf5kf25"
    assert event.object.key.endswith(".MXF")
    assert event.object.extension == ".MXF"
    assert event.object.owner == "ingest-robot+OR-rf5kf25"
    assert event.object.md5 == "0cc175b9c0f1b6a831c399e269772661"
    assert event.identity == (
        '["created","mam-highresvideo",'
        '"20261120-journaal-1900-a7f3c2d1-55e4-4b2a-9c1d-0e8f7a6b5c4d.MXF",'
        '"7c1f0a9e2b3d4c5e6f708192a3b4c5d6"]'
    )


def test_without_request_id_the_identity_is_kind_bucket_key_etag_and_time(
    examples: Path,
) -> None:
    event = event_of(golden_event(examples, ESSENCE), responseElements=None)
    assert event.identity == (
        '["created","mam-highresvideo",'
        '"20261120-journaal-1900-a7f3c2d1-55e4-4b2a-9c1d-0e8f7a6b5c4d.MXF",'
        '"4f1c2e9a7b3d5e6f8a9b0c1d2e3f4a5b","2026-11-20T09:14:03.512Z"]'
    )


def test_the_golden_essence_collateral_and_removal_are_three_different_events(
    examples: Path,
) -> None:
    """They share one gateway request id, as the records of one request do."""
    events = [
        event_of(golden_event(examples, name))
        for name in (ESSENCE, "event-collateral-created.json", "event-removed.json")
    ]
    assert len({event.request_id for event in events}) == 1
    assert len({event.identity for event in events}) == 3


def test_objects_of_one_gateway_request_are_different_events(examples: Path) -> None:
    message = golden_event(examples, ESSENCE)
    first = event_of(message)
    second = event_of(message, s3__object__key="another.MXF")
    created_then_removed = event_of(message, eventName="ObjectRemoved:Delete")
    assert len({first.identity, second.identity, created_then_removed.identity}) == 3


def test_a_separator_in_a_key_cannot_make_two_events_alike(examples: Path) -> None:
    message = golden_event(examples, ESSENCE)
    one = event_of(message, s3__bucket__name="a", s3__object__key="b|c")
    two = event_of(message, s3__bucket__name="a|b", s3__object__key="c")
    assert one.identity != two.identity


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [("or-RF5KF25", "OR-rf5kf25"), ("OR-rf5kf25", "OR-rf5kf25"), ("Or-AbCdEfG", "OR-abcdefg")],
)
def test_the_or_id_is_normalised(examples: Path, raw: str, normalised: str) -> None:
    event = event_of(golden_event(examples, ESSENCE), s3__bucket__metadata__tenant=raw)
    assert event.or_id == normalised


@pytest.mark.parametrize("raw", ["OR", "OR-abc", "OR-rf5kf25x", "OR-rf-5kf25", "-rf5kf25"])
def test_a_malformed_or_id_is_bad_input(examples: Path, raw: str) -> None:
    with pytest.raises(BadInput):
        event_of(golden_event(examples, ESSENCE), s3__bucket__metadata__tenant=raw)


@pytest.mark.parametrize(
    "path",
    [
        "eventName",
        "s3__bucket__name",
        "s3__domain__name",
        "s3__object__key",
        "s3__bucket__metadata__tenant",
        "userIdentity__principalId",
    ],
)
def test_a_missing_required_field_is_bad_input(examples: Path, path: str) -> None:
    message = golden_event(examples, ESSENCE)
    with pytest.raises(BadInput):
        parse_record(record_of(message, **{path: None}))
    with pytest.raises(BadInput):
        parse_record(record_of(message, **{path: ""}))
    with pytest.raises(BadInput):
        parse_record(record_of(message, **{path: 42}))


@pytest.mark.parametrize(
    ("metadata", "md5"),
    [
        ({"x-amz-meta-md5sum": "a" * 32, "md5sum": "b" * 32, "x-md5sum-meta": "c" * 32}, "a" * 32),
        ({"md5sum": "b" * 32, "x-md5sum-meta": "c" * 32}, "b" * 32),
        ({"x-md5sum-meta": "C" * 32}, "C" * 32),
        ({"md5sum": "not-an-md5"}, None),
        ({"md5sum": "a" * 31}, None),
        ({}, None),
    ],
)
def test_the_md5_follows_todays_precedence_and_must_be_hex(
    examples: Path, metadata: dict[str, str], md5: str | None
) -> None:
    event = event_of(golden_event(examples, ESSENCE), s3__object__metadata=metadata)
    assert event.object.md5 == md5


def test_a_key_with_a_character_xml_cannot_carry_is_bad_input(examples: Path) -> None:
    with pytest.raises(BadInput):
        event_of(golden_event(examples, ESSENCE), s3__object__key="a\x00b.MXF")


def test_the_key_is_used_as_given(examples: Path) -> None:
    event = event_of(golden_event(examples, ESSENCE), s3__object__key="a%20b+c d.MXF")
    assert event.object.key == "a%20b+c d.MXF"


def test_a_record_that_is_not_an_object_is_bad_input() -> None:
    with pytest.raises(BadInput):
        parse_record(["not", "a", "record"])


def test_a_long_identity_is_hashed_to_a_fixed_length(examples: Path) -> None:
    long_key = "k" * 5000 + ".MXF"
    one = event_of(golden_event(examples, ESSENCE), responseElements=None, s3__object__key=long_key)
    two = event_of(golden_event(examples, ESSENCE), responseElements=None, s3__object__key=long_key)
    other = event_of(
        golden_event(examples, ESSENCE), responseElements=None, s3__object__key=long_key + "x"
    )
    assert one.identity == two.identity != other.identity
    assert one.identity.startswith("sha256:") and len(one.identity) == 71


@pytest.mark.parametrize(
    "key", ["pid0000001.xml", "UPLOAD.XML", "closedOt/MEDIA-1/subtitles.Xml", "a.tar.xml"]
)
def test_a_created_object_with_the_sidecars_extension_is_bad_input(
    examples: Path, key: str
) -> None:
    """Its transfer would land on its own sidecar, `{name}.xml` (contract §3.4)."""
    with pytest.raises(BadInput) as refused:
        event_of(golden_event(examples, ESSENCE), s3__object__key=key)
    assert str(refused.value) == (
        f"the object's extension {key[-4:]} is the sidecar's: "
        "MediaHaven would take the file for its own sidecar"
    )


def test_only_the_last_extension_counts(examples: Path) -> None:
    message = golden_event(examples, ESSENCE)
    assert event_of(message, s3__object__key="subtitles.xml.gz").object.extension == ".gz"
    with pytest.raises(BadInput, match="is the sidecar's"):
        event_of(message, s3__object__key="subtitles.gz.xml")


def test_the_removal_of_an_xml_object_is_handled_as_any_other(examples: Path) -> None:
    """Nothing is transferred for a removal: an object archived before the rule still goes."""
    created = golden_event(examples, ESSENCE)
    with pytest.raises(BadInput, match="is the sidecar's"):
        event_of(created, s3__object__key="old.xml")
    removed = event_of(golden_event(examples, "event-removed.json"), s3__object__key="old.xml")
    assert removed.kind is EventKind.REMOVED


def test_an_extension_of_more_than_32_bytes_is_bad_input(examples: Path) -> None:
    """Counted in UTF-8 bytes, the dot included."""
    message = golden_event(examples, ESSENCE)
    for taken in ("." + "x" * 31, "." + "é" * 15 + "x"):
        assert event_of(message, s3__object__key="a" + taken).object.extension == taken
    for refused in ("." + "x" * 32, "." + "é" * 16, "." + "x" * 5000):
        with pytest.raises(BadInput, match="extension is longer than 32 bytes"):
            event_of(message, s3__object__key="a" + refused)


@pytest.mark.parametrize("extension", [".mxf\x85", ".m\x7fxf", ".mxf\t", ".b\\c", ".\\"])
def test_an_extension_with_a_control_character_or_backslash_is_bad_input(
    examples: Path, extension: str
) -> None:
    with pytest.raises(BadInput, match=r"extension .* holds a control character"):
        event_of(golden_event(examples, ESSENCE), s3__object__key="a" + extension)

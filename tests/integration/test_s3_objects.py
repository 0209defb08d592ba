"""The S3 adapter of `reconcile` against a real S3 endpoint on loopback (moto's server)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from s3_events_handler.adapters.config import S3Settings
from s3_events_handler.domain.errors import Rejected, ServiceUnavailable
from tests.support.s3_server import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, FakeS3

boto3 = pytest.importorskip("boto3")

from s3_events_handler.adapters.s3_objects import S3BucketObjects  # noqa: E402

MD5 = "0cc175b9c0f1b6a831c399e269772661"
AWKWARD_KEYS = ("a key with spaces.mxf", "ünïcødé/日本語 😀.mxf", "plus+sign+.mxf", "x/%2B/y.mxf")


def adapter_for(server: FakeS3, *, page_size: int = 1000) -> S3BucketObjects:
    s3 = S3Settings(
        endpoint_url=server.url,
        access_key_id=ACCESS_KEY_ID,
        secret_access_key=SECRET_ACCESS_KEY,
        region=REGION,
        domain="s3",
    )
    return S3BucketObjects(s3, timeout=5, page_size=page_size)


def test_every_page_is_listed_in_key_order(s3_server: FakeS3) -> None:
    bucket = s3_server.new_bucket()
    keys = [f"{n:03}.mxf" for n in range(23)]
    for key in reversed(keys):
        s3_server.put(bucket, key, body=b"12345")

    listed = list(adapter_for(s3_server, page_size=5).objects(bucket))

    assert [stored.key for stored in listed] == keys  # five pages
    first = listed[0]
    assert (first.bucket, first.size, first.metadata) == (bucket, 5, {})
    assert first.etag.startswith('"') and len(first.bare_etag) == 32
    assert abs(first.last_modified - datetime.now(UTC)) < timedelta(minutes=5)


def test_keys_with_spaces_unicode_and_plus_come_back_as_they_are(s3_server: FakeS3) -> None:
    bucket = s3_server.new_bucket()
    for key in AWKWARD_KEYS:
        s3_server.put(bucket, key)

    listed = [stored.key for stored in adapter_for(s3_server, page_size=2).objects(bucket)]

    assert listed == sorted(AWKWARD_KEYS, key=lambda key: key.encode())


def test_a_prefix_narrows_the_listing(s3_server: FakeS3) -> None:
    bucket = s3_server.new_bucket()
    for key in ("2024/a.mxf", "2025/b.mxf", "2025/c.mxf", "2026/d.mxf"):
        s3_server.put(bucket, key)

    listed = adapter_for(s3_server, page_size=1).objects(bucket, "2025/")

    assert [stored.key for stored in listed] == ["2025/b.mxf", "2025/c.mxf"]


def test_a_look_at_the_object_gives_its_user_metadata(s3_server: FakeS3) -> None:
    bucket = s3_server.new_bucket()
    s3_server.put(bucket, "plus+sign and space.mxf", md5sum=MD5, type="application/mxf")
    adapter = adapter_for(s3_server)
    [stored] = adapter.objects(bucket)

    looked_at = adapter.with_metadata(stored)

    assert looked_at is not None
    assert looked_at.metadata == {"md5sum": MD5, "type": "application/mxf"}
    assert looked_at.key == stored.key and looked_at.etag == stored.etag


def test_a_bucket_that_does_not_exist_is_a_refusal(s3_server: FakeS3) -> None:
    with pytest.raises(Rejected, match="NoSuchBucket"):
        list(adapter_for(s3_server).objects("no-such-bucket-here"))


def test_an_endpoint_that_stops_answering_mid_listing_is_unavailable_after_what_was_listed() -> (
    None
):
    server = FakeS3()
    with server:
        bucket = server.new_bucket()
        for n in range(10):
            server.put(bucket, f"{n:02}.mxf")
        listing = adapter_for(server, page_size=3).objects(bucket)
        found = [next(listing) for _ in range(3)]  # the first page
        server.stop()

        with pytest.raises(ServiceUnavailable, match=f"S3 at {server.url}"):
            found.extend(listing)

    assert [stored.key for stored in found] == ["00.mxf", "01.mxf", "02.mxf"]


def test_no_endpoint_at_all_is_unavailable() -> None:
    server = FakeS3()  # never started: nothing listens on its port
    with pytest.raises(ServiceUnavailable):
        list(adapter_for(server).objects("any"))


def test_an_object_deleted_since_it_was_listed_has_no_metadata_to_give(s3_server: FakeS3) -> None:
    bucket = s3_server.new_bucket()
    s3_server.put(bucket, "soon gone.mxf")
    adapter = adapter_for(s3_server)
    [stored] = adapter.objects(bucket)
    s3_server.client.delete_object(Bucket=bucket, Key="soon gone.mxf")

    assert adapter.with_metadata(stored) is None

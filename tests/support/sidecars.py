"""The golden essence's sidecar and transfer request as values, for the tests of what
uploads sidecars and publishes requests."""

from __future__ import annotations

from dataclasses import replace

from s3_events_handler.domain.model import S3Object, Sidecar, TransferRequest

# What tests/golden/event-essence-created.json makes for CP VRT in production: rendered,
# it is tests/golden/sidecar-essence.xml.
GOLDEN_ESSENCE_SIDECAR = Sidecar(
    name="k98z0d4w1q",
    cp_name="VRT",
    folder="TAPE-SHARE-EVENTS",
    or_id="OR-rf5kf25",
    pid="k98z0d4w1q",
    object=S3Object(
        domain="s3",
        bucket="mam-highresvideo",
        key="20261120-journaal-1900-a7f3c2d1-55e4-4b2a-9c1d-0e8f7a6b5c4d.MXF",
        owner="ingest-robot+OR-rf5kf25",
        md5="0cc175b9c0f1b6a831c399e269772661",
        etag="4f1c2e9a7b3d5e6f8a9b0c1d2e3f4a5b",
    ),
    object_use="archive_master",
)


def golden_transfer_request() -> TransferRequest:
    """The golden example's transfer request (production, CP VRT): as
    tests/golden/transfer-request-essence.json says, with its message id and correlation id."""
    return TransferRequest(
        # The same object as the sidecar's: a transfer request names no md5 or eTag.
        source=replace(GOLDEN_ESSENCE_SIDECAR.object, md5=None, etag=None),
        destination_path="/mnt/STORAGE/INGEST/SIDECAR/VRT/TAPE-SHARE-EVENTS/k98z0d4w1q.MXF",
        destination_host="ftp://transport.example.org",
        message_id="k98z0d4w1q",
        correlation_id="7c1f0a9e2b3d4c5e6f708192a3b4c5d6",
    )

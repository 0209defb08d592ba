"""A bucket's objects through the S3 API, with boto3 (contract §8): ListObjectsV2 page by page,
HeadObject for an object's user metadata.

boto3 is the optional extra `reconcile` (`pip install 's3-events-handler[reconcile]'`):
this is the only module that imports it, and only `reconcile` imports this one.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from s3_events_handler.adapters.config import S3Settings
from s3_events_handler.application.reasons import one_line
from s3_events_handler.domain.bucket import StoredObject
from s3_events_handler.domain.errors import Rejected, ServiceUnavailable
from s3_events_handler.domain.ports import BucketObjects

# What a HEAD of an object deleted since it was listed answers (a HEAD has no body: no name).
GONE = frozenset({"404", "NoSuchKey"})
FAILURES = (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError)
# Error codes that say a setting or an argument is wrong, not that S3 is down.
REFUSALS = frozenset({"NoSuchBucket", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                      "InvalidBucketName", "AllAccessDisabled", "403", "404"})  # fmt: skip


class S3BucketObjects(BucketObjects):
    """The `BucketObjects` port over the S3 API.

    The listing holds one page at a time (`page_size` objects). A failure to answer (the
    endpoint gone, a 5xx, a timeout) is `ServiceUnavailable`, once botocore's own retries
    are spent; a refusal (no such bucket, wrong credentials) is `Rejected`. One client,
    safe to share between threads (boto3's clients are).
    """

    def __init__(
        self,
        s3: S3Settings,
        *,
        timeout: float = 30.0,
        page_size: int = 1000,  # S3's own largest page; a smaller one only costs round trips
        connections: int = 10,
    ) -> None:
        self._where = s3.endpoint_url
        self._page_size = page_size
        config = botocore.config.Config(
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={"mode": "standard", "max_attempts": 3},
            max_pool_connections=connections,
            # Buckets by path, not by host name: the gateway, and a test server on loopback,
            # answer one host name.
            s3={"addressing_style": "path"},
        )
        self._client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=s3.endpoint_url,
            aws_access_key_id=s3.access_key_id,
            aws_secret_access_key=s3.secret_access_key,
            region_name=s3.region,
            config=config,
        )

    def objects(self, bucket: str, prefix: str = "") -> Iterator[StoredObject]:
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": self._page_size}
        )
        try:
            for page in pages:
                for item in page.get("Contents", ()):
                    yield _stored(bucket, item)
        except FAILURES as error:
            raise self._failure(f"listing bucket {bucket!r}", error) from error

    def with_metadata(self, stored: StoredObject) -> StoredObject | None:
        try:
            answer = self._client.head_object(Bucket=stored.bucket, Key=stored.key)
        except FAILURES as error:
            if _code_of(error) in GONE:
                return None
            raise self._failure(f"HEAD of {stored.bucket}/{stored.key}", error) from error
        metadata: Mapping[str, str] = answer.get("Metadata") or {}
        return replace(stored, metadata=dict(metadata))

    def close(self) -> None:
        self._client.close()

    def _failure(self, what: str, error: Exception) -> Rejected | ServiceUnavailable:
        """botocore's failure as the domain's split, once, at the edge."""
        kind = Rejected if _code_of(error) in REFUSALS else ServiceUnavailable
        return kind(f"S3 at {self._where}, {what}: {one_line(str(error))}")


def _code_of(error: Exception) -> str:
    if isinstance(error, botocore.exceptions.ClientError):
        return str(error.response.get("Error", {}).get("Code", ""))
    return ""


def _stored(bucket: str, item: Mapping[str, Any]) -> StoredObject:
    modified = item["LastModified"]
    if isinstance(modified, datetime) and modified.tzinfo is None:
        modified = modified.replace(tzinfo=UTC)
    return StoredObject(
        bucket=bucket,
        key=item["Key"],
        size=int(item.get("Size", 0)),
        etag=str(item.get("ETag", "")),
        last_modified=modified,
    )

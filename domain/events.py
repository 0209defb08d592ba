"""Reading one record of an S3 notification into an `S3Event`, or saying why not."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from s3_events_handler.domain.errors import BadInput
from s3_events_handler.domain.model import EventKind, S3Event, S3Object
from s3_events_handler.domain.rules import (
    normalise_or_id,
    require_transferable_extension,
    require_xml_text,
    valid_md5,
)

log = logging.getLogger(__name__)

# Today's precedence: the first key present wins.
MD5_KEYS = ("x-amz-meta-md5sum", "md5sum", "x-md5sum-meta")


def _at(record: Mapping[str, Any], *path: str) -> Any:
    node: Any = record
    for step in path:
        # JSON gives dicts: asked first, they skip the slower check against the ABC.
        if (type(node) is not dict and not isinstance(node, Mapping)) or step not in node:
            return None
        node = node[step]
    return node


def _required(record: Mapping[str, Any], *path: str) -> str:
    value = _at(record, *path)
    if not isinstance(value, str) or not value:
        raise BadInput(f"{'.'.join(path)} is missing or not a non-empty string")
    return value


def _optional(record: Mapping[str, Any], *path: str) -> str | None:
    """A non-empty string, else None; one holding what no text store can keep is ignored."""
    value = _at(record, *path)
    if not isinstance(value, str) or not value:
        return None
    try:
        return require_xml_text(value, ".".join(path))
    except BadInput as error:
        log.warning("ignoring %s", error)
        return None


def _kind_named(name: str) -> EventKind | None:
    return next((kind for kind in EventKind if name.startswith(f"{kind.value}:")), None)


def raw_md5(record: Mapping[str, Any]) -> str | None:
    metadata = _at(record, "s3", "object", "metadata")
    if not isinstance(metadata, Mapping):
        return None
    for key in MD5_KEYS:
        if key in metadata:
            value = metadata[key]
            return value if isinstance(value, str) else repr(value)
    return None


def parse_record(record: object) -> S3Event:
    """Validate one `Records[i]`; raises `BadInput` naming the first thing wrong."""
    if not isinstance(record, Mapping):
        raise BadInput("a record is not a JSON object")
    name = _required(record, "eventName")
    kind = _kind_named(name)
    if kind is None:
        raise BadInput(f"unknown event type: {name!r}")
    key = require_xml_text(_required(record, "s3", "object", "key"), "object key")
    md5 = raw_md5(record)
    obj = S3Object(
        domain=require_xml_text(_required(record, "s3", "domain", "name"), "domain"),
        bucket=require_xml_text(_required(record, "s3", "bucket", "name"), "bucket"),
        key=key,
        owner=require_xml_text(_required(record, "userIdentity", "principalId"), "owner"),
        md5=valid_md5(md5),
        etag=_optional(record, "s3", "object", "eTag"),
    )
    if kind is EventKind.CREATED:
        # Before anything is asked or minted. Only a created object is transferred: the
        # removal of one archived before still goes through.
        require_transferable_extension(obj.extension)
    if md5 is not None and obj.md5 is None:
        log.warning("ignoring an md5 that is not 32 hex digits for key %r: %r", key, md5)
    return S3Event(
        kind=kind,
        name=name,
        or_id=normalise_or_id(_required(record, "s3", "bucket", "metadata", "tenant")),
        object=obj,
        event_time=_optional(record, "eventTime"),
        request_id=_optional(record, "responseElements", "x-viaa-request-id"),
    )


def peek(record: object) -> tuple[EventKind | None, str | None, str | None]:
    """The kind, bucket and key a record claims, unchecked: what a report of bad input can say.

    Each is None where the record does not say it as text (or names no known event type).
    """
    if not isinstance(record, Mapping):
        return None, None, None
    name, bucket, key = (
        value if isinstance(value, str) else None
        for value in (
            _at(record, "eventName"),
            _at(record, "s3", "bucket", "name"),
            _at(record, "s3", "object", "key"),
        )
    )
    return (_kind_named(name) if name else None), bucket, key

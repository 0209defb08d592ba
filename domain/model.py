"""The service's vocabulary as plain, immutable values."""

from __future__ import annotations

import enum
import hashlib
import json
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field

from s3_events_handler.domain.errors import BadInput
from s3_events_handler.domain.rules import SIDECAR_EXTENSION, require_path_segment

SUBTITLE_TYPES = frozenset({"openOt", "closedOt"})
DEFAULT_FOLDER = "DISK-SHARE-EVENTS"
TRANSPORT_SIDECAR_ROOT = "/mnt/STORAGE/INGEST/SIDECAR"
MAX_IDENTITY_LENGTH = 200
# Pages one search may read (contract §4.1, MAX_SEARCH_PAGES): a short key can match across
# every tenant, and a search must neither run on for minutes nor fill the memory.
DEFAULT_MAX_SEARCH_PAGES = 50


class EventKind(enum.Enum):
    CREATED = "ObjectCreated"
    REMOVED = "ObjectRemoved"


class Step(enum.IntEnum):
    """How far an event got, in order; the ledger only ever moves forward."""

    NOTHING_DONE = 0  # taken in (and maybe claimed); nothing lasting done yet
    PID_CLAIMED = 1
    RELATION_ADDED = 2  # collaterals only: the essence knows of its collateral
    SIDECAR_UPLOADED = 3  # no longer written (a new attempt uploads again all the same)
    TRANSFER_REQUESTED = 4  # an ingest is finished
    REMOVED = 5  # a removal is finished

    @property
    def finished(self) -> bool:
        """Nothing is left to do for an event that got this far: it is not claimed again."""
        return self >= Step.TRANSFER_REQUESTED


# How long a claim on an event lasts unless its holder renews it (contract §6), the default of
# `CLAIM_LEASE_SECONDS`: how long the events of a consumer that died wait for the next one.
CLAIM_LEASE_SECONDS = 30.0


class Stage(enum.StrEnum):
    """Where an attempt at an event was when it stopped.

    The values are what operators read in a dead letter's `x-error-stage` header
    and in the logs: renaming one changes that contract.
    """

    PARSE = "parse"
    RECEIVED = "received"
    LEDGER = "ledger"
    ORGANISATIONS = "organisations"
    ARCHIVED_CHECK = "archived-check"
    PID = "pid"
    ESSENCE_LOOKUP = "essence-lookup"
    RELATION = "relation"
    SIDECAR_UPLOAD = "sidecar-upload"
    TRANSFER_REQUEST = "transfer-request"
    SEARCH = "search"
    DELETE_COLLATERAL = "delete-collateral"
    DELETE_ESSENCE = "delete-essence"
    DONE = "done"


class FileKind(enum.Enum):
    """What an object is to the archive; the destination table is keyed by these values."""

    ESSENCE = "essence"
    COLLATERAL = "collateral"


@dataclass(frozen=True, slots=True)
class S3Object:
    """The object an event is about, as the S3 gateway names it."""

    domain: str
    bucket: str
    key: str
    owner: str
    md5: str | None = None
    etag: str | None = None

    @property
    def extension(self) -> str:
        """The key's extension with its dot, `""` when there is none."""
        return posixpath.splitext(self.key)[1]


@dataclass(frozen=True, slots=True)
class S3Event:
    """One validated record of an S3 notification."""

    kind: EventKind
    name: str
    or_id: str
    object: S3Object
    event_time: str | None = None
    request_id: str | None = None

    @property
    def identity(self) -> str:
        """Stable across redeliveries and duplicates of one gateway event (contract §6): a JSON
        list, so no key can make two events look alike; hashed when long (keys may be
        kilobytes), so any ledger can index it."""
        obj = self.object
        event = [self.request_id] if self.request_id else [obj.etag or "", self.event_time or ""]
        identity = _identity_list(self.kind, obj.bucket, obj.key, *event)
        if len(identity) <= MAX_IDENTITY_LENGTH:
            return identity
        return "sha256:" + hashlib.sha256(identity.encode("utf-8", "surrogatepass")).hexdigest()


def identity_prefix(kind: EventKind, bucket: str, key: str) -> str:
    """How the identity of every event of `kind` about this object begins (`S3Event.identity`,
    when not hashed): how the ledger is asked about an object rather than an event."""
    return _identity_list(kind, bucket, key)[:-1] + ","


def _identity_list(kind: EventKind, bucket: str, key: str, *event: str) -> str:
    """The object, then what tells one event about it from another, as a compact JSON list."""
    parts = [kind.name.lower(), bucket, key, *event]
    return json.dumps(parts, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class CollateralKey:
    """`<collateral_type>/<media_id>/<file name>`: what a collateral key says it belongs to."""

    collateral_type: str
    media_id: str

    @classmethod
    def parse(cls, key: str) -> CollateralKey:
        parts = key.split("/")
        if len(parts) < 2 or not parts[0] or not parts[1]:
            raise BadInput(f"collateral key is not <type>/<media id>/<file>: {key!r}")
        return cls(
            collateral_type=require_path_segment(parts[0], "collateral type"),
            media_id=require_path_segment(parts[1], "media id"),
        )

    @property
    def object_use(self) -> str:
        return "subtitle" if self.collateral_type in SUBTITLE_TYPES else "collateral"


@dataclass(frozen=True, slots=True)
class Record:
    """One MediaHaven record, reduced to the fields the flows decide on."""

    fragment_id: str
    is_fragment: bool
    pid: str | None = None
    local_id: str | None = None
    s3_object_key: str | None = None
    s3_bucket: str | None = None
    md5: str | None = None


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """What the service remembers of an event it took in."""

    identity: str
    pid: str | None
    step: Step


@dataclass(frozen=True, slots=True)
class Sidecar:
    """What MediaHaven is told about a file arriving on the transport server.

    `name` is the base name on the server and in the transfer request; for a
    collateral it is `{essence_pid}_{type}` while `pid` is the essence's PID (as today).
    """

    name: str
    cp_name: str
    folder: str
    or_id: str
    pid: str
    object: S3Object
    object_use: str
    media_id: str | None = None
    related_pid: str | None = None

    @property
    def filename(self) -> str:
        return f"{self.name}{SIDECAR_EXTENSION}"

    @property
    def is_collateral(self) -> bool:
        return self.media_id is not None


@dataclass(frozen=True, slots=True)
class TransferRequest:
    """Asks the file-transfer service to move an object from S3 to the transport server."""

    source: S3Object
    destination_path: str
    destination_host: str
    message_id: str
    correlation_id: str


@dataclass(frozen=True, slots=True)
class Term:
    field: str
    value: str


@dataclass(frozen=True, slots=True)
class Query:
    """An AND of OR-groups of exact field/value terms; adapters quote and escape the values."""

    groups: tuple[tuple[Term, ...], ...]

    @classmethod
    def any_of(cls, *terms: Term) -> Query:
        return cls(groups=(tuple(terms),))

    @classmethod
    def all_of(cls, *terms: Term) -> Query:
        return cls(groups=tuple((term,) for term in terms))


@dataclass(frozen=True)
class Destinations:
    """Where sidecars go on the transport server, for one environment.

    `folders` maps a lower-cased CP name to {"essence": folder, "collateral": folder};
    CP names match case-insensitively, anything not listed gets the default folder.
    """

    transfer_host: str
    folders: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    default_folder: str = DEFAULT_FOLDER

    def folder_for(self, cp_name: str, kind: FileKind) -> str:
        by_kind = self.folders.get(cp_name.lower(), {})
        return require_path_segment(by_kind.get(kind.value, self.default_folder), "folder")

    def transfer_request(self, sidecar: Sidecar, *, correlation_id: str) -> TransferRequest:
        path = (
            f"{TRANSPORT_SIDECAR_ROOT}/{sidecar.cp_name}/{sidecar.folder}/"
            f"{sidecar.name}{sidecar.object.extension}"
        )
        return TransferRequest(
            source=sidecar.object,
            destination_path=path,
            destination_host=self.transfer_host,
            message_id=sidecar.name,
            correlation_id=correlation_id,
        )

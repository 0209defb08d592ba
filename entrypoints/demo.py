"""`s3-events-handler demo`: the example events end to end on the in-memory adapters, and
what the service sends where: the sidecars, the transfer requests, the MediaHaven calls."""

from __future__ import annotations

import json
from typing import Any, TextIO

from s3_events_handler.adapters.memory import (
    InMemoryArchiveRecords,
    InMemoryLedger,
    InMemoryOrganisations,
    InMemoryTransferRequests,
    InMemoryTransportServer,
    SequentialPids,
)
from s3_events_handler.adapters.rabbitmq.transfer_requests import transfer_request_body
from s3_events_handler.application.handler import MessageHandler
from s3_events_handler.application.messages import Delivery
from s3_events_handler.application.retries import RetrySchedule
from s3_events_handler.domain.model import Destinations, Record
from s3_events_handler.domain.use_cases import IngestEssence, RemoveEssence
from s3_events_handler.entrypoints.exit_codes import ExitCode

OR_ID = "OR-rf5kf25"
ESSENCE_KEY = "20261120-journaal-1900-a7f3c2d1-55e4-4b2a-9c1d-0e8f7a6b5c4d.MXF"
COLLATERAL_KEY = "closedOt/MEDIA-0042/journaal-1900.srt"
MD5S = {
    ESSENCE_KEY: "0cc175b9c0f1b6a831c399e269772661",
    COLLATERAL_KEY: "92eb5ffee6ae2fec3ad71c777531578f",
}

DEMO_DESTINATIONS = Destinations(
    transfer_host="ftp://transport.example.org",
    folders={"vrt": {"essence": "TAPE-SHARE-EVENTS", "collateral": "DISK-SHARE-EVENTS"}},
)


def s3_event(request_id: str, event_name: str, bucket: str, key: str) -> dict[str, Any]:
    """An S3 notification as the gateway sends it (contract §2)."""
    return {
        "Records": [
            {
                "eventVersion": "0.1",
                "eventSource": "viaa:s3",
                "eventTime": "2026-11-20T09:14:03.512Z",
                "eventName": event_name,
                "userIdentity": {"principalId": f"ingest-robot+{OR_ID}"},
                "responseElements": {"x-viaa-request-id": request_id},
                "s3": {
                    "domain": {"name": "s3"},
                    "bucket": {"name": bucket, "metadata": {"tenant": "or-rf5kf25"}},
                    "object": {
                        "key": key,
                        "eTag": "4f1c2e9a7b3d5e6f8a9b0c1d2e3f4a5b",
                        "metadata": {"md5sum": MD5S.get(key, "")},
                    },
                },
            }
        ]
    }


def run_demo(out: TextIO) -> int:
    """The use cases on the fakes, as another service would use them, and a running account
    of what happened at each step."""
    records, transport = InMemoryArchiveRecords(), InMemoryTransportServer()
    transfers, ledger = InMemoryTransferRequests(), InMemoryLedger()
    organisations = InMemoryOrganisations({OR_ID: "VRT"})
    ingest = IngestEssence(
        records=records, pids=SequentialPids(["k98z0d4w1q"]), organisations=organisations,
        transport=transport, transfers=transfers, destinations=DEMO_DESTINATIONS, ledger=ledger,
    )  # fmt: skip
    remove = RemoveEssence(records=records, organisations=organisations, ledger=ledger)
    handler = MessageHandler(ingest=ingest, remove=remove, retries=RetrySchedule(),
                             unfinished=ledger)  # fmt: skip

    def step(title: str, message: dict[str, Any] | bytes) -> None:
        body = message if isinstance(message, bytes) else json.dumps(message).encode()
        uploads, published = len(transport.uploads), len(transfers.published)
        relations, deleted = len(records.relations), len(records.deleted)
        out.write(f"\n=== {title}\n")
        outcome = handler.handle(Delivery(body=body))
        said = getattr(outcome, "summary", None) or getattr(outcome, "reason", "")
        out.write(f"outcome: {type(outcome).__name__}: {said}\n")
        for path in transport.uploads[uploads:]:
            out.write(f"--- sidecar {path}\n{transport.uploaded[path].decode()}")
        for request in transfers.published[published:]:
            out.write(f"--- transfer request (message_id {request.message_id})\n")
            out.write(json.dumps(json.loads(transfer_request_body(request)), indent=2) + "\n")
        for relation in records.relations[relations:]:
            out.write(
                f"--- MediaHaven: relate {relation.related_pid} to record "
                f"{relation.fragment_id} ({relation.reason})\n"
            )
        for fragment_id in records.deleted[deleted:]:
            out.write(
                f"--- MediaHaven: delete record {fragment_id} "
                f"({records.delete_reasons[fragment_id]})\n"
            )

    essence = s3_event("request-1", "ObjectCreated:Put", "mam-highresvideo", ESSENCE_KEY)
    step("An essence lands in S3", essence)
    step("The gateway sends the same event twice", essence)
    out.write("\n(MediaHaven ingests it, with a fragment of local id MEDIA-0042)\n")
    records.records += [
        Record("essence-1", False, "k98z0d4w1q", None, ESSENCE_KEY, "mam-highresvideo"),
        Record("fragment-1", True, "k98z0d4w1q", "MEDIA-0042", ESSENCE_KEY, "mam-highresvideo"),
    ]
    again = s3_event("request-2", "ObjectCreated:Put", "mam-highresvideo", ESSENCE_KEY)
    step("The same file is written to S3 again", again)
    collateral = s3_event("request-3", "ObjectCreated:Put", "mam-collaterals", COLLATERAL_KEY)
    step("Subtitles for it land in the collateral bucket", collateral)
    records.records.append(
        Record("collateral-1", False, "k98z0d4w1q_closedOt", "MEDIA-0042", COLLATERAL_KEY,
               "mam-collaterals")
    )  # fmt: skip
    removed = s3_event("request-4", "ObjectRemoved:Delete", "mam-highresvideo", ESSENCE_KEY)
    step("The essence is deleted from S3", removed)
    step("A message that is not an S3 event", b"hello")
    return ExitCode.OK

"""The floor: the service's calls for one essence event in a bare serial loop.

The same libraries and the same persistent connections as the consumer, none of
its structure: no ledger, no logging, no retries, no worker thread, no container.
What the consumer spends above this, serially, is the price of its design; the gap
between this and the latency it waits for is all serial processing can ever gain.

Run by the bench as its own process (`python -m tests.bench.floor`), in the consumer's
environment, so the kernel's CPU and memory figures are the loop's alone and not
those of the fake servers in the bench process. It prints `consuming from QUEUE` when
its connections are open, as the consumer logs it (a JSON line with its time), and
runs until SIGTERM, as the consumer does, so the bench reads its figures from a live
process.
"""

from __future__ import annotations

import ftplib
import io
import json
import os
import secrets
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import quote, urlencode

import pika
import requests

from s3_events_handler.adapters import sidecar_xml
from s3_events_handler.adapters.destinations import load_destinations
from s3_events_handler.adapters.ftp import parse_ftp_host
from s3_events_handler.domain.model import FileKind, S3Object, Sidecar
from s3_events_handler.domain.rules import normalise_or_id, valid_md5

RECORDS_PATH = "/mediahaven-rest-api/v2/records"
TOKEN_PATH = "/auth/ropc.php"
CP_NAME_QUERY = "query cp($id: String!) { organizations(id: $id) { mam_label } }"
MD5_KEYS = ("x-amz-meta-md5sum", "md5sum", "x-md5sum-meta")
SIDECAR_ROOT = "/mnt/STORAGE/INGEST/SIDECAR"
TIMEOUT = 30.0
IDLE_SECONDS = 0.01


class Floor:
    """One connection to each service, opened once; `handle_one` per incoming message."""

    def __init__(self, env: dict[str, str]) -> None:
        self.queue = env["S3_EVENTS_QUEUE"]
        self._transfer_exchange = env["FILETRANSFER_EXCHANGE"]
        self._transfer_queue = env["FILETRANSFER_QUEUE"]
        self._ftp_host_setting = env["MEDIAHAVEN_FTP_HOST"]
        self._pid_url = env["PID_SERVICE_HOST"]
        self._records_url = env["MEDIAHAVEN_API_HOST"].rstrip("/") + RECORDS_PATH
        self._environment = env["APP_ENVIRONMENT"]
        self._destinations = load_destinations(
            Path(env["DESTINATION_CONFIG"]),
            environment=self._environment.lower(),
            transfer_host=self._ftp_host_setting,
        )

        self._connection = pika.BlockingConnection(
            pika.ConnectionParameters(
                host=env["RABBIT_MQ_HOST"],
                port=int(env["RABBIT_MQ_PORT"]),
                credentials=pika.PlainCredentials(env["RABBIT_MQ_USER"], env["RABBIT_MQ_PASSWD"]),
                client_properties={"connection_name": "s3eh-bench-floor"},
            )
        )
        self._channel = self._connection.channel()
        self._channel.confirm_delivery()

        self._mediahaven = requests.Session()
        token = self._mediahaven.post(
            env["MEDIAHAVEN_API_HOST"].rstrip("/") + TOKEN_PATH,
            data={
                "grant_type": "password",
                "username": env["MEDIAHAVEN_API_USERNAME"],
                "password": env["MEDIAHAVEN_API_PASSWD"],
                "client_id": env["MEDIAHAVEN_API_CLIENT_ID"],
                "client_secret": env["MEDIAHAVEN_API_CLIENT_SECRET"],
            },
            timeout=TIMEOUT,
        )
        token.raise_for_status()
        self._search_headers = {
            "Accept": "application/json",
            "Authorization": f"Bearer {token.json()['access_token']}",
        }
        self._pids = requests.Session()
        self._organisations = requests.Session()
        self._organisations_url = env["ORGANISATIONS_API_HOST"]
        self._cp_names: dict[str, str] = {}  # the service caches them too

        host, port = parse_ftp_host(self._ftp_host_setting)
        self._ftp = ftplib.FTP(timeout=TIMEOUT)
        self._ftp.connect(host, port)
        self._ftp.login(env["MEDIAHAVEN_FTP_USER"], env["MEDIAHAVEN_FTP_PASSWD"])
        self._ftp_folder = ""

    def handle_one(self) -> bool:
        """Take one message and do what the consumer does for it; False when none was left."""
        method, _properties, body = self._channel.basic_get(queue=self.queue, auto_ack=False)
        if method is None:
            return False
        record = json.loads(body)["Records"][0]
        s3 = record["s3"]
        metadata = s3["object"].get("metadata") or {}
        md5 = valid_md5(next((metadata[k] for k in MD5_KEYS if k in metadata), None))
        obj = S3Object(
            domain=s3["domain"]["name"],
            bucket=s3["bucket"]["name"],
            key=s3["object"]["key"],
            owner=record["userIdentity"]["principalId"],
            md5=md5,
        )
        or_id = normalise_or_id(s3["bucket"]["metadata"]["tenant"])
        cp_name = self._cp_name(or_id)
        if not self._archived(obj):
            pid = self._mint()
            folder = self._destinations.folder_for(cp_name, FileKind.ESSENCE)
            sidecar = Sidecar(
                name=pid,
                cp_name=cp_name,
                folder=folder,
                or_id=or_id,
                pid=pid,
                object=obj,
                object_use="archive_master",
            )
            self._upload(sidecar, sidecar_xml.render(sidecar))
            self._request_transfer(sidecar, record["responseElements"]["x-viaa-request-id"])
        self._channel.basic_ack(delivery_tag=method.delivery_tag)
        return True

    def idle(self, seconds: float) -> None:
        """Wait for more messages, keeping the broker connection serviced."""
        self._connection.sleep(seconds)

    def close(self) -> None:
        for session in (self._mediahaven, self._pids, self._organisations):
            session.close()
        self._ftp.close()
        if self._connection.is_open:
            self._connection.close()

    def _cp_name(self, or_id: str) -> str:
        if or_id not in self._cp_names:
            answer = self._organisations.post(
                self._organisations_url,
                json={"query": CP_NAME_QUERY, "variables": {"id": or_id}},
                headers={"Accept": "application/json"},
                timeout=TIMEOUT,
            )
            answer.raise_for_status()
            self._cp_names[or_id] = answer.json()["data"]["organizations"][0]["mam_label"]
        return self._cp_names[or_id]

    def _archived(self, obj: S3Object) -> bool:
        """The archived check of a VRT essence: a search on the key alone (contract §4.1)."""
        q = f'+(s3_object_key:"{obj.key}")'
        params = urlencode({"q": q, "startIndex": 0, "nrOfResults": 100}, quote_via=quote)
        answer = self._mediahaven.get(
            f"{self._records_url}?{params}", headers=self._search_headers, timeout=TIMEOUT
        )
        answer.raise_for_status()
        results: list[Any] = answer.json()["Results"]
        return any(r.get("Dynamic", {}).get("s3_object_key") == obj.key for r in results)

    def _mint(self) -> str:
        answer = self._pids.get(
            self._pid_url, headers={"Accept": "application/json"}, timeout=TIMEOUT
        )
        answer.raise_for_status()
        return str(answer.json()[0]["id"])

    def _upload(self, sidecar: Sidecar, data: bytes) -> None:
        """STOR under a temporary name, then RNFR/RNTO to the final one, as the service does."""
        folder = f"/{sidecar.cp_name}/{sidecar.folder}"
        if folder != self._ftp_folder:
            self._ftp.cwd(folder)
            self._ftp_folder = folder
        temporary = f".{sidecar.filename}.{secrets.token_hex(4)}.part"
        self._ftp.storbinary(f"STOR {temporary}", io.BytesIO(data))
        self._ftp.rename(temporary, sidecar.filename)

    def _request_transfer(self, sidecar: Sidecar, correlation_id: str) -> None:
        obj = sidecar.object
        name = sidecar.name + os.path.splitext(obj.key)[1]
        body = {
            "source": {
                "domain": {"name": obj.domain},
                "bucket": {"name": obj.bucket},
                "object": {"key": obj.key},
            },
            "destination": {
                "path": f"{SIDECAR_ROOT}/{sidecar.cp_name}/{sidecar.folder}/{name}",
                "host": self._ftp_host_setting,
            },
        }
        self._channel.basic_publish(
            exchange=self._transfer_exchange,
            routing_key=self._transfer_queue,
            body=json.dumps(body).encode(),
            properties=pika.BasicProperties(
                content_type="application/json",
                delivery_mode=2,
                correlation_id=correlation_id,
                message_id=sidecar.name,
            ),
            mandatory=True,
        )


def main() -> int:
    stopping = False

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    floor = Floor(dict(os.environ))
    try:
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        print(json.dumps({"time": now, "message": f"consuming from {floor.queue}"}), flush=True)
        handled = 0
        while not stopping:
            if floor.handle_one():
                handled += 1
            else:
                floor.idle(IDLE_SECONDS)
        print(f"stopped after {handled} messages", flush=True)
    finally:
        floor.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

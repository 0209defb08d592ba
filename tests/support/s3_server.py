"""A real S3 endpoint on loopback: moto's standalone server (`moto[server]`), which speaks the
S3 REST API over HTTP as `mediahaven_server` speaks MediaHaven's; the adapter and the
`reconcile` command, even in another process, talk to it as to the gateway."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.support.loopback import LOOPBACK, Startable, free_port

ACCESS_KEY_ID = "test-access-key"
SECRET_ACCESS_KEY = "test-secret-key-5e1f"
REGION = "us-east-1"


def moto_missing() -> str | None:
    """Why the S3 tests cannot run here, or None: moto and boto3 come with the dev lock."""
    try:
        import boto3  # noqa: F401
        from moto.server import ThreadedMotoServer  # noqa: F401
    except ImportError as error:
        return f"moto[server] and boto3 are not installed: {error}"
    return None


class FakeS3(Startable):
    """moto's S3 on 127.0.0.1 and a free port, with a client to arrange buckets.

    moto keeps its buckets in the process: each test makes buckets of its own
    (`new_bucket`), so tests side by side never see each other's.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self._server: Any = None
        self.client: Any = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> FakeS3:
        import boto3
        import botocore.config
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address=LOOPBACK, port=self.port, verbose=False)
        self._server.start()
        self.client = boto3.session.Session().client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
            region_name=REGION,
            config=botocore.config.Config(s3={"addressing_style": "path"}),
        )
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def new_bucket(self, label: str = "reconcile") -> str:
        name = f"{label}-{uuid.uuid4().hex[:10]}"
        self.client.create_bucket(Bucket=name)
        return name

    def put(self, bucket: str, key: str, body: bytes = b"x", **metadata: str) -> None:
        self.client.put_object(Bucket=bucket, Key=key, Body=body, Metadata=metadata)

    def environment(self) -> dict[str, str]:
        """The S3 settings of `reconcile` for this server."""
        return {
            "S3_ENDPOINT_URL": self.url,
            "S3_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "S3_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        }


def skip_without_moto() -> None:
    reason = moto_missing()
    if reason is not None:
        pytest.skip(reason)

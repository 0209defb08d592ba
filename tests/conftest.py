"""Shared fixtures: the golden examples and the local servers (skipped, or required)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.service import RunningService, running
from tests.support.certificates import TlsFiles, make_tls_files
from tests.support.s3_server import FakeS3, skip_without_moto
from tests.support.tls_proxy import TlsProxy

REPO = Path(__file__).resolve().parent.parent
# A byte-for-byte copy of the golden examples, so a plain clone tests itself.
EXAMPLES = REPO / "tests" / "golden"
BROKER_HOST = os.environ.get("TEST_BROKER_HOST", "127.0.0.1")
BROKER_PORT = int(os.environ.get("TEST_BROKER_PORT", "5672"))
POSTGRES_DSN = os.environ.get("TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def _missing(what: str, required_by: str) -> None:
    """Skip, or fail when the run says the service must be there."""
    if os.environ.get(required_by) == "1":
        pytest.fail(f"{what} ({required_by}=1)")
    pytest.skip(what)


@pytest.fixture(scope="session")
def examples() -> Path:
    """`tests/golden/`: the golden events and outputs."""
    if not EXAMPLES.is_dir():
        pytest.fail(f"golden examples not found at {EXAMPLES}")
    return EXAMPLES


@pytest.fixture(scope="session")
def broker() -> tuple[str, int]:
    """The local broker's address; skips without one unless REQUIRE_BROKER=1, then fails."""
    if not _answers(BROKER_HOST, BROKER_PORT):
        _missing(f"no RabbitMQ broker answers on {BROKER_HOST}:{BROKER_PORT}", "REQUIRE_BROKER")
    return BROKER_HOST, BROKER_PORT


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """A DSN of the local PostgreSQL server's maintenance database; skips or fails as `broker`."""
    import psycopg

    try:
        psycopg.connect(POSTGRES_DSN, connect_timeout=3).close()
    except psycopg.Error as error:
        _missing(f"no PostgreSQL answers at {POSTGRES_DSN}: {error}", "REQUIRE_POSTGRES")
    return POSTGRES_DSN


@pytest.fixture
def postgres_dsn(postgres_server: str) -> Iterator[str]:
    """A database of its own for one test, dropped afterwards."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    name = f"s3eh_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield make_conninfo(postgres_server, dbname=name)
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def broker_restarts_allowed() -> bool:
    """Restarting the broker disturbs everything else that uses it: only where the run says so."""
    return os.environ.get("ALLOW_BROKER_RESTART") == "1"


@pytest.fixture
def broker_restartable(broker: tuple[str, int], broker_restarts_allowed: bool) -> None:
    """For a test that restarts the local broker; skipped unless ALLOW_BROKER_RESTART=1."""
    if not broker_restarts_allowed:
        pytest.skip("restarts the local RabbitMQ; set ALLOW_BROKER_RESTART=1 to run it")


@pytest.fixture
def service(tmp_path: Path, broker: tuple[str, int]) -> Iterator[RunningService]:
    """Fakes of everything the consumer talks to, started, and the broker pre-declared as
    today's service leaves it; the consumer process is the test's to start."""
    yield from running(RunningService(workdir=tmp_path, broker=broker))


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A CA the TLS tests trust, and a certificate for 127.0.0.1 it signed."""
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def unknown_ca(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """Another CA and its server certificate: what a client trusting `tls_files` must refuse."""
    return make_tls_files(tmp_path_factory.mktemp("tls-unknown"))


@pytest.fixture
def tls_proxy(broker: tuple[str, int], tls_files: TlsFiles) -> Iterator[TlsProxy]:
    """The broker as an AMQPS server: TLS with the `tls_files` certificate, plain AMQP behind."""
    with TlsProxy(tls_files.server_pem, broker) as proxy:
        yield proxy


@pytest.fixture(scope="session")
def s3_server() -> Iterator[FakeS3]:
    """moto's S3 server on loopback, for the session; skipped only where moto is absent."""
    skip_without_moto()
    with FakeS3() as server:
        yield server

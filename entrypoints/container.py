"""The composition root: the one place that knows which adapter plays which port."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TextIO

import requests
from dependency_injector import containers, providers

from s3_events_handler.adapters.config import (
    ConfigError,
    load_config,
    load_destinations,
    prefetch_for,
)
from s3_events_handler.adapters.ftp import FtpTransportServer
from s3_events_handler.adapters.ftp_pool import FtpTransportPool
from s3_events_handler.adapters.health import Health, StatusServer, stall_limit
from s3_events_handler.adapters.http_calls import service_session
from s3_events_handler.adapters.ledger_postgres import PostgresLedger, password_in
from s3_events_handler.adapters.ledger_sqlite import SqliteLedger
from s3_events_handler.adapters.logs import configure_logging
from s3_events_handler.adapters.mediahaven import MediaHavenRecords
from s3_events_handler.adapters.metrics import PrometheusTelemetry, process_registry
from s3_events_handler.adapters.organisations import CachedOrganisations, OrganisationsApi
from s3_events_handler.adapters.pid import LocalPids, PidWebService, uses_pid_service
from s3_events_handler.adapters.rabbitmq import (
    AmqpTransferRequests,
    BrokerConnection,
    BrokerSettings,
    Consumer,
)
from s3_events_handler.adapters.rabbitmq.dead_letters import DeadLetterQueue
from s3_events_handler.application.handler import MessageHandler, RetryPolicy
from s3_events_handler.application.limits import ConsumerLedger, MessageLimits
from s3_events_handler.application.ordering import ordering_key
from s3_events_handler.domain.errors import ServiceUnavailable
from s3_events_handler.domain.use_cases import IngestEssence, RemoveEssence


def http_session(url: str, connections: int) -> Iterator[requests.Session]:
    """One keep-alive session per outside service, a connection per worker, closed at shutdown."""
    session = service_session(url, connections=connections)
    yield session
    session.close()


def ftp_transport(
    host: str, user: str, password: str, timeout: float, tls: bool, ca_file: str, connections: int
) -> Iterator[FtpTransportPool]:
    """A connection per worker at most, each opened on its first upload."""

    def connect() -> FtpTransportServer:
        return FtpTransportServer(
            host=host, user=user, password=password, timeout=timeout, tls=tls, ca_file=ca_file
        )

    connect()  # an FTP host setting that cannot be read stops the start, not the first upload
    pool = FtpTransportPool(connect, size=connections)
    yield pool
    pool.close()


def broker_connection(settings: BrokerSettings) -> Iterator[BrokerConnection]:
    """Opened by whoever uses it first (the consumer reconnects on its own); closed at shutdown."""
    connection = BrokerConnection(settings)
    yield connection
    connection.close()


def open_ledger(
    path: str, dsn: str, retention_days: float, lease_seconds: float, workers: int
) -> Iterator[ConsumerLedger]:
    """PostgreSQL when LEDGER_DSN is set (several consumers), else a SQLite file.

    Opened at start: a ledger that cannot be opened is a setting to fix, named as such.
    PostgreSQL gets a connection per worker (`connections`) at most.
    """
    try:
        chosen: PostgresLedger | SqliteLedger = (
            PostgresLedger(
                dsn,
                retention_days=retention_days,
                lease_seconds=lease_seconds,
                connections=workers + 1,  # and the heartbeat that renews the claims
            )
            if dsn
            else SqliteLedger(path, retention_days=retention_days, lease_seconds=lease_seconds)
        )
    except ServiceUnavailable as error:
        raise ConfigError([], [f"{'LEDGER_DSN' if dsn else 'LEDGER_PATH'}: {error}"]) from None
    yield chosen
    chosen.close()


def pid_source(environment: str) -> str:
    return "service" if uses_pid_service(environment) else "local"


def package_version() -> str:
    """The installed distribution's version: what `s3_events_build_info` shows."""
    try:
        return version("s3-events-handler")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


class Container(containers.DeclarativeContainer):
    """Adapters as singletons, I/O handles as resources, use cases as factories."""

    config = providers.Configuration(strict=True)

    broker_settings = providers.Singleton(
        BrokerSettings,
        host=config.rabbitmq.host,
        port=config.rabbitmq.port,
        user=config.rabbitmq.user,
        password=config.rabbitmq.passwd,
        vhost=config.rabbitmq.vhost,
        prefetch=providers.Callable(prefetch_for, config.rabbitmq.prefetch, config.app.concurrency),
        heartbeat=config.rabbitmq.heartbeat,
        tls=config.rabbitmq.ssl,
        ca_file=config.rabbitmq.ca_file,
        incoming_queue=config.rabbitmq.incoming.queue,
        incoming_exchange=config.rabbitmq.incoming.exchange,
        transfer_queue=config.rabbitmq.outgoing.queue,
        transfer_exchange=config.rabbitmq.outgoing.exchange,
        retry_delays=providers.Callable(tuple, config.app.retry_delays),
    )
    broker = providers.Resource(broker_connection, settings=broker_settings)

    # Metrics and health (contract §7): the registry belongs to this container, so to the process.
    metrics_registry = providers.Singleton(process_registry)
    health = providers.Singleton(
        Health,
        providers.Callable(
            stall_limit,
            heartbeat=config.rabbitmq.heartbeat,
            grace=config.app.shutdown_grace_seconds,
            blocked_timeout=broker_settings.provided.blocked_connection_timeout,
        ),
    )
    telemetry = providers.Singleton(
        PrometheusTelemetry,
        metrics_registry,
        health,
        version=providers.Callable(package_version),
    )
    status_server = providers.Singleton(
        StatusServer, port=config.metrics.port, registry=metrics_registry, health=health
    )

    mediahaven_session = providers.Resource(
        http_session, config.mediahaven.api.host, config.app.concurrency
    )
    pid_session = providers.Resource(http_session, config.pid_service.host, config.app.concurrency)
    organisations_session = providers.Resource(
        http_session, config.organisations_api.host, config.app.concurrency
    )

    records = providers.Singleton(
        MediaHavenRecords,
        session=mediahaven_session,
        base_url=config.mediahaven.api.host,
        client_id=config.mediahaven.api.client_id,
        client_secret=config.mediahaven.api.client_secret,
        username=config.mediahaven.api.username,
        password=config.mediahaven.api.passwd,
        timeout=config.http.timeout_seconds,
        max_pages=config.mediahaven.api.max_search_pages,
    )
    pids = providers.Selector(
        providers.Callable(pid_source, config.app.environment),
        service=providers.Singleton(
            PidWebService,
            session=pid_session,
            url=config.pid_service.host,
            timeout=config.http.timeout_seconds,
        ),
        local=providers.Singleton(LocalPids),
    )
    organisations = providers.Singleton(
        CachedOrganisations,
        providers.Singleton(
            OrganisationsApi,
            session=organisations_session,
            url=config.organisations_api.host,
            timeout=config.http.timeout_seconds,
        ),
        ttl_seconds=config.organisations_api.cache_seconds,
    )
    transport = providers.Resource(
        ftp_transport,
        host=config.mediahaven.ftp.host,
        user=config.mediahaven.ftp.user,
        password=config.mediahaven.ftp.passwd,
        timeout=config.mediahaven.ftp.timeout_seconds,
        tls=config.mediahaven.ftp.tls,
        ca_file=config.mediahaven.ftp.ca_file,
        connections=config.app.concurrency,
    )
    transfers = providers.Singleton(
        AmqpTransferRequests,
        broker,
        exchange=config.rabbitmq.outgoing.exchange,
        routing_key=config.rabbitmq.outgoing.queue,
    )
    ledger = providers.Resource(
        open_ledger,
        path=config.ledger.path,
        dsn=config.ledger.dsn,
        retention_days=config.ledger.retention_days,
        lease_seconds=config.ledger.claim_lease_seconds,
        workers=config.app.concurrency,
    )
    destinations = providers.Singleton(
        load_destinations,
        providers.Callable(Path, config.app.destination_config),
        environment=config.app.environment,
        transfer_host=config.mediahaven.ftp.host,
    )

    # Each adapter's failures name their system; the handler counts them (application.handler).
    ingest = providers.Factory(
        IngestEssence,
        records=records,
        pids=pids,
        organisations=organisations,
        transport=transport,
        transfers=transfers,
        destinations=destinations,
        ledger=ledger,
        collateral_bucket=config.app.collateral_bucket,
        on_recall=telemetry.provided.ledger_hit,
    )
    remove = providers.Factory(
        RemoveEssence,
        records=records,
        organisations=organisations,
        ledger=ledger,
        collateral_bucket=config.app.collateral_bucket,
        on_recall=telemetry.provided.ledger_hit,
    )
    message_limits = providers.Singleton(
        MessageLimits,
        max_bytes=config.app.max_message_bytes,
        max_records=config.app.max_records,
        poison_limit=config.app.poison_limit,
    )
    retry_policy = providers.Singleton(
        RetryPolicy,
        delays=providers.Callable(tuple, config.app.retry_delays),
        max_attempts=config.app.retry_max_attempts,
    )
    handler = providers.Singleton(
        MessageHandler,
        ingest=ingest,
        remove=remove,
        retry_policy=retry_policy,
        limits=message_limits,
        unfinished=ledger,
        telemetry=telemetry,
    )
    consumer = providers.Singleton(
        Consumer,
        broker,
        broker_settings,
        handler.provided.handle,
        concurrency=config.app.concurrency,
        ordering_key=providers.Callable(
            functools.partial, ordering_key, max_bytes=config.app.max_message_bytes
        ),
        retry_policy=retry_policy,
        telemetry=telemetry,
    )
    dead_letter_queue = providers.Factory(DeadLetterQueue, broker_settings)


def secrets_of(settings: dict[str, Any]) -> list[str]:
    dsn = settings["ledger"]["dsn"]
    return [
        settings["rabbitmq"]["passwd"],
        settings["mediahaven"]["api"]["client_secret"],
        settings["mediahaven"]["api"]["passwd"],
        settings["mediahaven"]["ftp"]["passwd"],
        *([dsn, password_in(dsn) or ""] if dsn else []),
    ]


def build_container(
    config_path: Path, *, quiet: bool = False, log_to: TextIO | None = None
) -> Container:
    """Settings loaded and checked, logging set up; raises `ConfigError`.

    The log goes to standard output, where the platform reads a service's lines, or to
    `log_to`. `quiet`: an operator command prints its own report on standard output, so
    its log goes to standard error and shows warnings and errors only, unless
    LOG_LEVEL=DEBUG asks for everything.
    """
    settings = load_config(config_path, os.environ)
    level = settings["logging"]["level"]
    if quiet and level == "INFO":
        level = "WARNING"
    stream = sys.stderr if quiet else log_to
    configure_logging(level, settings["logging"]["format"], secrets_of(settings), stream=stream)
    container = Container()
    container.config.from_dict(settings)
    return container

"""The composition root: the one place that knows which adapter plays which port."""

from __future__ import annotations

import functools
import os
import sys
from contextlib import closing
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TextIO

from dependency_injector import containers, providers

from s3_events_handler.adapters.config import (
    ConfigError,
    LedgerSettings,
    Settings,
    load_settings,
)
from s3_events_handler.adapters.destinations import load_destinations
from s3_events_handler.adapters.ftp import FtpTransportServer
from s3_events_handler.adapters.health import Health, StatusServer, stall_limit
from s3_events_handler.adapters.http_calls import service_session
from s3_events_handler.adapters.ledger_postgres import PostgresLedger
from s3_events_handler.adapters.ledger_sqlite import SqliteLedger
from s3_events_handler.adapters.logs import configure_logging
from s3_events_handler.adapters.mediahaven import MediaHavenRecords
from s3_events_handler.adapters.metrics import PrometheusTelemetry, process_registry
from s3_events_handler.adapters.organisations import CachedOrganisations, OrganisationsApi
from s3_events_handler.adapters.pid import LocalPids, PidWebService, uses_pid_service
from s3_events_handler.adapters.rabbitmq.consumer import Consumer
from s3_events_handler.adapters.rabbitmq.dead_letters import DeadLetterQueue
from s3_events_handler.adapters.rabbitmq.io_thread import BrokerConnection
from s3_events_handler.adapters.rabbitmq.transfer_requests import AmqpTransferRequests
from s3_events_handler.application.handler import MessageHandler
from s3_events_handler.application.ordering import ordering_key
from s3_events_handler.domain.errors import ServiceUnavailable
from s3_events_handler.domain.use_cases import IngestEssence, RemoveEssence


def open_ledger(ledger: LedgerSettings, workers: int) -> PostgresLedger | SqliteLedger:
    """PostgreSQL when LEDGER_DSN is set (several consumers), else a SQLite file; opened at
    start, so one that cannot be opened is a setting to fix, named as such."""
    retention_days, lease_seconds = ledger.retention_days, ledger.claim_lease_seconds
    try:
        if ledger.dsn:
            return PostgresLedger(
                ledger.dsn,
                retention_days=retention_days,
                lease_seconds=lease_seconds,
                connections=workers + 1,  # one a worker, one for the heartbeat renewing claims
            )
        return SqliteLedger(ledger.path, retention_days=retention_days, lease_seconds=lease_seconds)
    except ServiceUnavailable as error:
        raise ConfigError.of(f"{ledger.variable}: {error}") from None


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

    settings = providers.Dependency(instance_of=Settings)
    broker_settings = settings.provided.broker
    # Opened by whoever uses it first (the consumer reconnects on its own); closed at shutdown.
    broker = providers.Resource(closing, providers.Factory(BrokerConnection, broker_settings))

    # Metrics and health (contract §7): the registry belongs to this container, so to the process.
    metrics_registry = providers.Singleton(process_registry)
    health = providers.Singleton(
        Health,
        providers.Callable(
            stall_limit,
            heartbeat=broker_settings.heartbeat,
            grace=settings.provided.shutdown_grace_seconds,
            blocked_timeout=broker_settings.blocked_connection_timeout,
        ),
    )
    telemetry = providers.Singleton(
        PrometheusTelemetry,
        metrics_registry,
        health,
        version=providers.Callable(package_version),
    )
    status_server = providers.Singleton(
        StatusServer, port=settings.provided.metrics_port, registry=metrics_registry, health=health
    )

    workers = settings.provided.concurrency
    mediahaven = settings.provided.mediahaven
    http_timeout = settings.provided.http_timeout_seconds
    # One keep-alive session per outside service, a connection per worker, closed at shutdown.
    mediahaven_session = providers.Resource(service_session, mediahaven.host, connections=workers)
    pid_session = providers.Resource(
        service_session, settings.provided.pid_service_host, connections=workers
    )
    organisations_session = providers.Resource(
        service_session, settings.provided.organisations_host, connections=workers
    )

    records = providers.Singleton(
        MediaHavenRecords,
        session=mediahaven_session,
        base_url=mediahaven.host,
        client_id=mediahaven.client_id,
        client_secret=mediahaven.client_secret,
        username=mediahaven.username,
        password=mediahaven.password,
        timeout=http_timeout,
        max_pages=mediahaven.max_search_pages,
    )
    pids = providers.Selector(
        providers.Callable(pid_source, settings.provided.environment),
        service=providers.Singleton(
            PidWebService,
            session=pid_session,
            url=settings.provided.pid_service_host,
            timeout=http_timeout,
        ),
        local=providers.Singleton(LocalPids),
    )
    organisations = providers.Singleton(
        CachedOrganisations,
        providers.Singleton(
            OrganisationsApi,
            session=organisations_session,
            url=settings.provided.organisations_host,
            timeout=http_timeout,
        ),
        ttl_seconds=settings.provided.organisations_cache_seconds,
    )
    ftp = settings.provided.ftp
    # A connection per worker at most, each opened on its first upload; an FTP host setting
    # that cannot be read stops the start, not the first upload.
    transport = providers.Resource(
        closing,
        providers.Factory(
            FtpTransportServer,
            host=ftp.host,
            user=ftp.user,
            password=ftp.password,
            timeout=ftp.timeout_seconds,
            tls=ftp.tls,
            ca_file=ftp.ca_file,
            connections=workers,
        ),
    )
    transfers = providers.Singleton(AmqpTransferRequests.for_settings, broker)
    ledger = providers.Resource(
        closing, providers.Callable(open_ledger, settings.provided.ledger, workers)
    )
    destinations = providers.Singleton(
        load_destinations,
        settings.provided.destination_config,
        environment=settings.provided.environment,
        transfer_host=ftp.host,
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
        collateral_bucket=settings.provided.collateral_bucket,
        on_recall=telemetry.provided.ledger_hit,
    )
    remove = providers.Factory(
        RemoveEssence,
        records=records,
        organisations=organisations,
        ledger=ledger,
        collateral_bucket=settings.provided.collateral_bucket,
        on_recall=telemetry.provided.ledger_hit,
    )
    handler = providers.Singleton(
        MessageHandler,
        ingest=ingest,
        remove=remove,
        retries=broker_settings.retries,
        limits=settings.provided.limits,
        unfinished=ledger,
        telemetry=telemetry,
    )
    consumer = providers.Singleton(
        Consumer,
        broker,
        broker_settings,
        handler.provided.handle,
        concurrency=workers,
        ordering_key=providers.Callable(
            functools.partial, ordering_key, max_bytes=settings.provided.limits.max_bytes
        ),
        telemetry=telemetry,
    )
    dead_letter_queue = providers.Factory(DeadLetterQueue, broker_settings)


def build_container(
    config_path: Path,
    *,
    quiet: bool = False,
    log_to: TextIO | None = None,
    needs: tuple[str, ...] = (),
) -> Container:
    """Settings loaded and checked, logging set up (docs/operations.md, "Logs"); raises
    `ConfigError`. `quiet`: an operator command's log, warnings up, on standard error.
    `needs`: the optional settings the command cannot do without (`load_settings`)."""
    settings = load_settings(config_path, os.environ, needs=needs)
    level = settings.log_level
    if quiet and level == "INFO":
        level = "WARNING"
    stream = sys.stderr if quiet else log_to
    configure_logging(level, settings.log_format, settings.secrets, stream=stream)
    return Container(settings=settings)

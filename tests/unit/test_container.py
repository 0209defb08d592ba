"""The composition root wires real settings to the use cases; fakes stand in for the I/O."""

from __future__ import annotations

from pathlib import Path

import pytest

from s3_events_handler.adapters.config import load_settings
from s3_events_handler.adapters.memory import (
    InMemoryArchiveRecords,
    InMemoryLedger,
    InMemoryOrganisations,
    InMemoryTransferRequests,
    InMemoryTransportServer,
    SequentialPids,
)
from s3_events_handler.adapters.organisations import CachedOrganisations
from s3_events_handler.adapters.pid import LocalPids, PidWebService
from s3_events_handler.application.messages import Delivery, Done, Retry
from s3_events_handler.domain.errors import ServiceUnavailable, System
from s3_events_handler.entrypoints.container import Container
from tests.unit.builders import Failing
from tests.unit.test_config import REPO, REQUIRED


def container_for(**environ: str) -> Container:
    settings = load_settings(
        REPO / "config.yml",
        {**REQUIRED, "DESTINATION_CONFIG": str(REPO / "destination_config.yml"), **environ},
    )
    return Container(settings=settings)


def test_the_handler_runs_the_flows_on_whatever_adapters_it_is_given(examples: Path) -> None:
    container = container_for()
    transport, transfers = InMemoryTransportServer(), InMemoryTransferRequests()
    container.override_providers(
        records=InMemoryArchiveRecords(),
        pids=SequentialPids(["k98z0d4w1q"]),
        organisations=InMemoryOrganisations({"OR-rf5kf25": "VRT"}),
        transport=transport,
        transfers=transfers,
        ledger=InMemoryLedger(),
    )
    body = (examples / "event-essence-created.json").read_bytes()
    outcome = container.handler().handle(Delivery(body=body))
    assert isinstance(outcome, Done)
    # The production table from destination_config.yml and MEDIAHAVEN_FTP_HOST were used.
    assert list(transport.uploaded) == ["/VRT/TAPE-SHARE-EVENTS/k98z0d4w1q.xml"]
    assert transfers.published[0].destination_host == "ftp://tra"


def test_production_and_qas_use_the_pid_service_other_environments_mint_locally() -> None:
    assert isinstance(container_for(APP_ENVIRONMENT="production").pids(), PidWebService)
    assert isinstance(container_for(APP_ENVIRONMENT="qas").pids(), PidWebService)
    assert isinstance(container_for(APP_ENVIRONMENT="int").pids(), LocalPids)


@pytest.mark.parametrize("environment", ["Production", "PRODUCTION", "Qas"])
def test_the_environment_is_compared_case_insensitively(environment: str) -> None:
    assert isinstance(container_for(APP_ENVIRONMENT=environment).pids(), PidWebService)


def test_cp_names_are_cached_and_adapters_are_shared() -> None:
    container = container_for()
    assert isinstance(container.organisations(), CachedOrganisations)
    assert container.records() is container.records()
    assert container.transport() is container.transport()
    container.shutdown_resources()


def test_the_ports_report_into_the_processs_own_registry(examples: Path) -> None:
    container = container_for()
    container.override_providers(
        records=Failing(ServiceUnavailable("MediaHaven answered 503", system=System.MEDIAHAVEN)),
        pids=SequentialPids(["k98z0d4w1q"]),
        organisations=InMemoryOrganisations({"OR-rf5kf25": "VRT"}),
        transport=InMemoryTransportServer(),
        transfers=InMemoryTransferRequests(),
        ledger=InMemoryLedger(),
    )
    body = (examples / "event-essence-created.json").read_bytes()
    assert isinstance(container.handler().handle(Delivery(body=body)), Retry)
    mediahaven = {"system": "mediahaven"}
    registry = container.metrics_registry()
    assert registry.get_sample_value("s3_events_downstream_errors_total", mediahaven) == 1
    assert registry.get_sample_value("s3_events_in_progress") == 0
    # Another container, another registry: nothing carried over.
    fresh = container_for()
    fresh.telemetry()
    errors = fresh.metrics_registry().get_sample_value(
        "s3_events_downstream_errors_total", mediahaven
    )
    assert errors == 0


def test_the_status_server_listens_on_metrics_port() -> None:
    assert container_for(METRICS_PORT="9123").status_server().port == 9123

"""Settings: today's variable names, defaults for the new ones, every problem named at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from s3_events_handler.adapters.config import (
    ConfigError,
    Settings,
    load_settings,
)
from s3_events_handler.adapters.destinations import load_destinations
from s3_events_handler.adapters.rabbitmq.connection import BrokerSettings
from s3_events_handler.application.limits import MessageLimits
from s3_events_handler.application.retries import RetrySchedule
from s3_events_handler.domain.model import FileKind
from tests.support.certificates import make_tls_files

REPO = Path(__file__).resolve().parents[2]
REQUIRED = {
    "RABBIT_MQ_HOST": "mq",
    "RABBIT_MQ_PORT": "5672",
    "RABBIT_MQ_USER": "u",
    "RABBIT_MQ_PASSWD": "p",
    "S3_EVENTS_QUEUE": "s3-events",
    "S3_EVENTS_EXCHANGE": "s3-events",
    "FILETRANSFER_QUEUE": "ft",
    "FILETRANSFER_EXCHANGE": "",
    "MEDIAHAVEN_API_HOST": "https://mh",
    "MEDIAHAVEN_API_CLIENT_ID": "id",
    "MEDIAHAVEN_API_CLIENT_SECRET": "secret",
    "MEDIAHAVEN_API_USERNAME": "user",
    "MEDIAHAVEN_API_PASSWD": "pw",
    "MEDIAHAVEN_FTP_HOST": "ftp://tra",
    "MEDIAHAVEN_FTP_USER": "fu",
    "MEDIAHAVEN_FTP_PASSWD": "fp",
    "PID_SERVICE_HOST": "http://pid",
    "ORGANISATIONS_API_HOST": "http://org",
    "APP_ENVIRONMENT": "production",
}


def load(**changes: str | None) -> Settings:
    environ = {k: v for k, v in {**REQUIRED, **changes}.items() if v is not None}
    return load_settings(REPO / "config.yml", environ)


def test_todays_variables_fill_the_settings() -> None:
    settings = load()
    # RABBIT_MQ_PREFETCH unset: one message in hand per worker, CONCURRENCY's default.
    assert settings.broker == BrokerSettings(
        host="mq", port=5672, user="u", password="p", vhost="/", prefetch=16,
        heartbeat=60, tls=False, ca_file="",
        incoming_queue="s3-events", incoming_exchange="s3-events",
        transfer_queue="ft", transfer_exchange="",
        retries=RetrySchedule(delays=(10, 30, 90, 270, 810), max_attempts=8),
    )  # fmt: skip


def test_new_settings_have_the_documented_defaults() -> None:
    settings = load()
    assert settings.environment == "production"
    assert settings.collateral_bucket == "mam-collaterals"
    assert settings.destination_config == Path("destination_config.yml")
    assert settings.shutdown_grace_seconds == 20.0
    assert settings.broker.retries == RetrySchedule(delays=(10, 30, 90, 270, 810), max_attempts=8)
    assert settings.limits == MessageLimits(max_bytes=4194304, max_records=1000, poison_limit=3)
    assert (settings.concurrency, settings.pin_cpu) == (16, True)
    assert (settings.log_level, settings.log_format) == ("INFO", "json")
    assert settings.metrics_port == 9100
    assert settings.http_timeout_seconds == 30.0
    assert settings.mediahaven.max_search_pages == 50
    assert (settings.organisations_host, settings.organisations_cache_seconds) == (
        "http://org",
        3600.0,
    )


def test_every_missing_or_empty_variable_is_named_at_once() -> None:
    with pytest.raises(ConfigError) as raised:
        load(RABBIT_MQ_HOST=None, MEDIAHAVEN_API_PASSWD="", FILETRANSFER_EXCHANGE=None)
    assert raised.value.missing == [
        "FILETRANSFER_EXCHANGE",
        "MEDIAHAVEN_API_PASSWD",
        "RABBIT_MQ_HOST",
    ]


def test_the_exchanges_may_be_empty_but_must_be_set() -> None:
    assert load(S3_EVENTS_EXCHANGE="").broker.incoming_exchange == ""
    with pytest.raises(ConfigError):
        load(S3_EVENTS_EXCHANGE=None)


def test_the_user_prefix_of_today_is_accepted_and_ignored() -> None:
    assert "user_prefix" not in str(load(MEDIAHAVEN_API_USER_PREFIX="viaa-"))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RABBIT_MQ_PORT", "five"),
        ("RETRY_DELAYS", "10,,30"),
        ("RETRY_DELAYS", "10,-1"),
        ("RETRY_MAX_ATTEMPTS", "0"),
        ("LOG_FORMAT", "xml"),
        ("HTTP_TIMEOUT_SECONDS", "0"),
        ("METRICS_PORT", "-1"),
        ("METRICS_PORT", "65536"),
        ("MAX_SEARCH_PAGES", "0"),
        ("MAX_SEARCH_PAGES", "all"),
        ("MEDIAHAVEN_FTP_HOST", "ftp://transport.example.org:notaport"),
        ("MEDIAHAVEN_FTP_HOST", "sftp://transport.example.org"),
    ],
)
def test_a_malformed_value_is_named_with_the_reason(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load(**{name: value})
    assert name in str(raised.value)


def test_metrics_port_0_turns_the_endpoint_off() -> None:
    assert load(METRICS_PORT="0").metrics_port == 0


def test_the_ledger_retention_takes_fractions_but_not_under_one_day() -> None:
    assert load(LEDGER_RETENTION_DAYS="1.5").ledger.retention_days == 1.5
    with pytest.raises(ConfigError) as raised:
        load(LEDGER_RETENTION_DAYS="0.5")
    assert "LEDGER_RETENTION_DAYS" in str(raised.value)
    assert "at least 1 day" in str(raised.value)


def test_transport_security_is_off_by_default_as_today() -> None:
    settings = load()
    assert (settings.broker.tls, settings.broker.ca_file) == (False, "")
    assert (settings.ftp.tls, settings.ftp.ca_file) == (False, "")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("TRUE", True), ("1", True), ("Yes", True), ("false", False),
     ("False", False), ("0", False), ("no", False), ("", False)],
)  # fmt: skip
def test_the_tls_switches_take_true_or_false_in_the_usual_spellings(
    value: str, expected: bool
) -> None:
    settings = load(RABBIT_MQ_SSL=value, MEDIAHAVEN_FTP_TLS=value)
    assert settings.broker.tls is expected
    assert settings.ftp.tls is expected


@pytest.mark.parametrize("name", ["RABBIT_MQ_SSL", "MEDIAHAVEN_FTP_TLS"])
@pytest.mark.parametrize("value", ["on", "ture", "2", "true please"])
def test_anything_else_for_a_tls_switch_stops_the_start_naming_it(name: str, value: str) -> None:
    """A typo must not quietly mean plain text."""
    with pytest.raises(ConfigError) as raised:
        load(**{name: value})
    assert (
        str(raised.value)
        == f"{name}={value!r} is not valid: must be true or false (or 1/0, yes/no)"
    )


def test_a_ca_file_is_taken_when_it_holds_certificates(tmp_path: Path) -> None:
    ca_file = make_tls_files(tmp_path).ca_file
    settings = load(
        RABBIT_MQ_SSL="true",
        RABBIT_MQ_CA_FILE=str(ca_file),
        MEDIAHAVEN_FTP_TLS="true",
        MEDIAHAVEN_FTP_CA_FILE=str(ca_file),
    )
    assert settings.broker.ca_file == str(ca_file)
    assert settings.ftp.ca_file == str(ca_file)


@pytest.mark.parametrize(
    ("switch", "name"),
    [("RABBIT_MQ_SSL", "RABBIT_MQ_CA_FILE"), ("MEDIAHAVEN_FTP_TLS", "MEDIAHAVEN_FTP_CA_FILE")],
)
@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "cannot be read: No such file or directory"),
        ("not a certificate\n", "holds no usable PEM certificate"),
        ("", "holds no usable PEM certificate"),
    ],
)
def test_a_ca_file_that_cannot_be_used_stops_the_start_naming_it(
    tmp_path: Path, switch: str, name: str, content: str | None, reason: str
) -> None:
    path = tmp_path / "ca.pem"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as raised:
        load(**{switch: "true", name: str(path)})
    assert str(raised.value).startswith(f"{name}={str(path)!r} is not valid: {reason}")
    assert len(str(raised.value).splitlines()) == 1


@pytest.mark.parametrize(
    ("switch", "name"),
    [("RABBIT_MQ_SSL", "RABBIT_MQ_CA_FILE"), ("MEDIAHAVEN_FTP_TLS", "MEDIAHAVEN_FTP_CA_FILE")],
)
def test_a_ca_file_without_its_tls_switch_is_refused(
    tmp_path: Path, switch: str, name: str
) -> None:
    """Otherwise an operator who set the CA file would believe the connection is encrypted."""
    ca_file = make_tls_files(tmp_path).ca_file
    with pytest.raises(ConfigError) as raised:
        load(**{name: str(ca_file)})
    assert str(raised.value) == (
        f"{name} is set but {switch} is not true: set {switch}=true to use it, "
        f"or leave {name} empty"
    )


def test_secrets_are_not_repeated_in_the_error() -> None:
    with pytest.raises(ConfigError) as raised:
        load(RABBIT_MQ_PORT="x", RABBIT_MQ_HOST=None)
    assert "secret" not in str(raised.value)
    assert "fp" not in str(raised.value).split()


def test_production_vrt_essences_go_to_tape_whatever_the_case_of_the_label() -> None:
    destinations = load_destinations(
        REPO / "destination_config.yml", environment="production", transfer_host="ftp://tra"
    )
    assert destinations.folder_for("VRT", FileKind.ESSENCE) == "TAPE-SHARE-EVENTS"
    assert destinations.folder_for("vrt", FileKind.COLLATERAL) == "DISK-SHARE-EVENTS"
    assert destinations.folder_for("AMSAB", FileKind.ESSENCE) == "DISK-SHARE-EVENTS"


def test_the_environment_picks_its_table_whatever_its_case() -> None:
    destinations = load_destinations(
        REPO / "destination_config.yml", environment="Production", transfer_host="ftp://tra"
    )
    assert destinations.folder_for("VRT", FileKind.ESSENCE) == "TAPE-SHARE-EVENTS"


def test_other_environments_put_everything_on_disk() -> None:
    for environment in ("qas", "int", "dev"):
        destinations = load_destinations(
            REPO / "destination_config.yml", environment=environment, transfer_host="ftp://tra"
        )
        assert destinations.folder_for("VRT", FileKind.ESSENCE) == "DISK-SHARE-EVENTS"


def test_a_folder_that_is_not_one_path_segment_is_refused(tmp_path: Path) -> None:
    table = tmp_path / "destinations.yml"
    table.write_text("production:\n  vrt:\n    essence: ../../etc\n")
    with pytest.raises(ConfigError):
        load_destinations(table, environment="production", transfer_host="ftp://tra")


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        pytest.param("production:\n  vrt: [essence\n", "as YAML", id="not YAML"),
        pytest.param("- production\n", "mapping of environments", id="a list"),
        pytest.param("production: DISK\n", "production is not a mapping", id="scalar environment"),
        pytest.param("production: [vrt]\n", "production is not a mapping", id="list environment"),
        pytest.param("production:\n  vrt: DISK\n", "production.vrt is not", id="scalar CP"),
        pytest.param("production:\n  vrt:\n    essense: TAPE\n", "essense", id="unknown kind"),
        pytest.param("production:\n  vrt:\n    essence:\n", "essence", id="no folder"),
    ],
)
def test_a_destination_table_not_of_the_documented_shape_is_refused(
    tmp_path: Path, table: str, problem: str
) -> None:
    path = tmp_path / "destinations.yml"
    path.write_text(table)
    with pytest.raises(ConfigError) as raised:
        load_destinations(path, environment="production", transfer_host="ftp://tra")
    assert str(raised.value).startswith("DESTINATION_CONFIG=")
    assert problem in str(raised.value)
    assert len(str(raised.value).splitlines()) == 1


def test_a_destination_table_of_another_environment_is_not_checked(tmp_path: Path) -> None:
    path = tmp_path / "destinations.yml"
    path.write_text("qas: DISK\nproduction:\n  vrt:\n    essence: TAPE\n")
    destinations = load_destinations(path, environment="production", transfer_host="ftp://tra")
    assert destinations.folder_for("VRT", FileKind.ESSENCE) == "TAPE"

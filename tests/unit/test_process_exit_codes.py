"""`s3-events-handler process`: the exit status a script sees for each way an event ends.

0 done, 1 dead-lettered, 75 (EX_TEMPFAIL) to be retried or the broker unreachable, 2 the
settings. The broker connection and the handler are autospec'd mocks put into the real
container: what is under test is outcome -> status, which no fake can show as plainly; the
flows themselves run on the in-memory fakes (tests/unit) and against real servers
(tests/e2e/test_process.py).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from unittest.mock import MagicMock, call

import pytest
from dependency_injector import providers
from pytest_mock import MockerFixture

from s3_events_handler.adapters.rabbitmq.connection import BrokerSettings
from s3_events_handler.adapters.rabbitmq.io_thread import BrokerConnection
from s3_events_handler.application.handler import MessageHandler
from s3_events_handler.application.messages import (
    DeadLetter,
    Delivery,
    Done,
    Outcome,
    Retry,
    Split,
)
from s3_events_handler.domain.results import Sent
from s3_events_handler.entrypoints.cli import main
from s3_events_handler.entrypoints.container import Container
from s3_events_handler.entrypoints.service import process
from tests.unit.test_config import REPO, REQUIRED

PASSWORD = "pw-that-must-not-show"
SENT = Sent(
    key="clip.MXF",
    cp_name="VRT",
    folder="TAPE-SHARE-EVENTS",
    sidecar_file="k98z0d4w1q.xml",
    pid="k98z0d4w1q",
)
DONE = Done(result=SENT, correlation_id="c-1")
DEAD = DeadLetter(reason="s3.object.key is missing", stage="parse")
RETRY = Retry(
    reason="ServiceUnavailable: 503", delay_seconds=10, next_attempt=2, correlation_id="c"
)


@pytest.fixture
def broker(mocker: MockerFixture) -> MagicMock:
    broker: MagicMock = mocker.create_autospec(BrokerConnection, instance=True)
    broker.settings = BrokerSettings(
        host="mq.example.org",
        port=5672,
        user="u",
        password=PASSWORD,
        incoming_queue="s3-events",
        transfer_queue="ft",
    )
    return broker


@pytest.fixture
def handler(mocker: MockerFixture) -> MagicMock:
    handler: MagicMock = mocker.create_autospec(MessageHandler, instance=True)
    return handler


@pytest.fixture
def container(broker: MagicMock, handler: MagicMock) -> Iterator[Container]:
    """The real container, no settings needed: `process` takes only these two from it."""
    container = Container()
    container.broker.override(providers.Object(broker))
    container.handler.override(providers.Object(handler))
    yield container
    container.reset_override()


@pytest.fixture
def event_file(examples: Path) -> Path:
    return examples / "event-essence-created.json"


@pytest.mark.parametrize(
    ("outcome", "status", "reported"),
    [(DONE, 0, "done"), (DEAD, 1, "dead-letter"), (RETRY, 75, "retry")],
    ids=["done", "dead-lettered", "retry"],
)
def test_each_outcome_has_its_exit_status_and_one_line_of_json(
    container: Container,
    broker: MagicMock,
    handler: MagicMock,
    event_file: Path,
    capsys: pytest.CaptureFixture[str],
    outcome: Outcome,
    status: int,
    reported: str,
) -> None:
    handler.handle.return_value = outcome
    assert process(container, str(event_file)) == status
    broker.open.assert_called_once_with()
    handler.handle.assert_called_once_with(Delivery(body=event_file.read_bytes()))
    assert json.loads(capsys.readouterr().out)["outcome"] == reported


@pytest.mark.parametrize(
    ("parts", "status"),
    [((DONE, DONE), 0), ((DONE, DEAD), 1), ((DEAD, RETRY), 75), ((RETRY, DONE), 75)],
    ids=["done+done", "done+dead", "dead+retry", "retry+done"],
)
def test_a_split_message_exits_with_the_status_of_its_worst_record(
    container: Container,
    handler: MagicMock,
    event_file: Path,
    capsys: pytest.CaptureFixture[str],
    parts: tuple[Outcome, Outcome],
    status: int,
) -> None:
    """Every record is handled, then the status says what still needs doing: a retry
    before a dead letter, since a retried record may yet succeed."""
    handler.handle.side_effect = [Split((b"first", b"second")), *parts]
    assert process(container, str(event_file)) == status
    assert handler.handle.call_args_list[1:] == [
        call(Delivery(body=b"first")),
        call(Delivery(body=b"second")),
    ]
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_standard_input_is_read_for_a_dash(
    container: Container,
    handler: MagicMock,
    event_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = event_file.read_bytes()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(body)))
    handler.handle.return_value = DONE
    assert process(container, "-") == 0
    handler.handle.assert_called_once_with(Delivery(body=body))


def test_an_unreachable_broker_is_75_and_nothing_is_handled(
    container: Container,
    broker: MagicMock,
    handler: MagicMock,
    event_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Nothing was done, so trying again later is safe; the password never shows."""
    broker.open.side_effect = ConnectionRefusedError(f"refused for u:{PASSWORD}")
    assert process(container, str(event_file)) == 75
    handler.handle.assert_not_called()
    said = capsys.readouterr()
    assert said.out == ""
    assert "cannot reach the broker at mq.example.org:5672" in said.err
    assert PASSWORD not in said.err


def test_settings_that_cannot_start_the_service_are_2_before_anything_is_touched(
    event_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The real settings loader, no mocks: one variable missing is enough."""
    monkeypatch.chdir(tmp_path)
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("RABBIT_MQ_PASSWD")
    assert main(["--config", str(REPO / "config.yml"), "process", str(event_file)]) == 2
    assert "RABBIT_MQ_PASSWD" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no ledger, nothing else made

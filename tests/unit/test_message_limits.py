"""What one message may cost (contract §6): its size, its records, and the consumer's deaths
during it, decided before the message is parsed, split or handled."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from s3_events_handler.adapters.memory import InMemoryLedger
from s3_events_handler.adapters.rabbitmq.headers import headers_for
from s3_events_handler.application.handler import MessageHandler
from s3_events_handler.application.limits import MessageLimits, digest_of
from s3_events_handler.application.messages import DeadLetter, Delivery, Done, Retry, Split
from s3_events_handler.application.ordering import Unordered, ordering_key
from s3_events_handler.application.retries import RetrySchedule
from s3_events_handler.domain.errors import ServiceUnavailable
from tests.unit.builders import World, golden_event

ESSENCE = "event-essence-created.json"


def handler_for(world: World, limits: MessageLimits) -> MessageHandler:
    return MessageHandler(
        ingest=world.ingest,
        remove=world.remove,
        retries=RetrySchedule(),
        limits=limits,
        unfinished=world.ledger,
    )


def padded_to(message: dict[str, Any], size: int) -> bytes:
    """The message as JSON of exactly `size` bytes (spaces after the opening brace)."""
    body = json.dumps(message).encode()
    assert len(body) <= size
    return b"{" + b" " * (size - len(body)) + body[1:]


def with_records(examples: Path, count: int) -> bytes:
    record = golden_event(examples, ESSENCE)["Records"][0]
    return json.dumps({"Records": [record] * count}).encode()


@pytest.mark.parametrize(("over", "dead_lettered"), [(-1, False), (0, False), (1, True)])
def test_a_body_over_max_message_bytes_is_dead_lettered_unread(
    examples: Path, over: int, dead_lettered: bool
) -> None:
    world = World()
    limit = len(json.dumps(golden_event(examples, ESSENCE))) + 100
    body = padded_to(golden_event(examples, ESSENCE), limit + over)

    outcome = handler_for(world, MessageLimits(max_bytes=limit)).handle(Delivery(body=body))

    if dead_lettered:
        assert isinstance(outcome, DeadLetter)
        assert outcome.reason == (
            f"the body is {limit + 1} bytes, over MAX_MESSAGE_BYTES ({limit})"
        )
        assert outcome.stage == "parse"
        assert world.records.searches == []  # not handled
        assert world.ledger.unfinished == {}  # nor counted in
    else:
        assert isinstance(outcome, Done)


@pytest.mark.parametrize(("count", "split"), [(2, True), (3, True), (4, False)])
def test_a_message_with_more_than_max_records_is_dead_lettered_unsplit(
    examples: Path, count: int, split: bool
) -> None:
    world = World()
    body = with_records(examples, count)

    outcome = handler_for(world, MessageLimits(max_records=3)).handle(Delivery(body=body))

    if split:
        assert isinstance(outcome, Split) and len(outcome.bodies) == count
    else:
        assert isinstance(outcome, DeadLetter)
        assert outcome.reason == "4 records, over MAX_RECORDS (3): not split"
        assert outcome.stage == "parse"
        assert headers_for(outcome, {})["x-error"] == outcome.reason


def test_an_oversized_body_is_not_parsed_for_its_ordering_key(examples: Path) -> None:
    body = json.dumps(golden_event(examples, ESSENCE)).encode()
    assert isinstance(ordering_key(body, max_bytes=len(body)), tuple)
    assert isinstance(ordering_key(body, max_bytes=len(body) - 1), Unordered)


def crashed_during(ledger: InMemoryLedger, body: bytes, times: int) -> None:
    """What `times` deliveries of `body` during which the consumer died left in the ledger."""
    for _ in range(times):
        ledger.begin_delivery(digest_of(body))


@pytest.mark.parametrize(("deaths", "handled"), [(0, True), (2, True), (3, False), (5, False)])
def test_a_message_the_consumer_died_during_poison_limit_times_is_not_handled_again(
    examples: Path, deaths: int, handled: bool
) -> None:
    world = World()
    body = json.dumps(golden_event(examples, ESSENCE)).encode()
    crashed_during(world.ledger, body, deaths)

    outcome = handler_for(world, MessageLimits(poison_limit=3)).handle(Delivery(body=body))

    if handled:
        assert isinstance(outcome, Done)
    else:
        assert isinstance(outcome, DeadLetter)
        assert outcome.reason == (
            f"the consumer died {deaths} times while handling this message "
            "(POISON_LIMIT 3): not handled again"
        )
        assert outcome.stage == "received"
        assert world.records.searches == [] and world.pids.minted == []
    assert world.ledger.unfinished == {}  # an outcome clears the count: a replay starts at 0


def test_every_outcome_clears_the_count(examples: Path) -> None:
    world = World()
    world.organisations.cp_names.clear()  # the org is unknown: a dead letter
    body = json.dumps(golden_event(examples, ESSENCE)).encode()
    crashed_during(world.ledger, body, 2)
    assert isinstance(handler_for(world, MessageLimits()).handle(Delivery(body=body)), DeadLetter)
    assert world.ledger.unfinished == {}


def test_the_count_is_raised_before_the_handling_starts(examples: Path) -> None:
    world = World()
    body = json.dumps(golden_event(examples, ESSENCE)).encode()
    seen: list[int] = []
    search = world.records.search

    def search_and_look(query: Any) -> Any:
        seen.append(world.ledger.unfinished.get(digest_of(body), 0))
        return search(query)

    world.records.search = search_and_look  # type: ignore[method-assign]
    handler_for(world, MessageLimits()).handle(Delivery(body=body))
    assert seen == [1]  # had the process died in the search, the count would say so


def test_a_ledger_that_cannot_count_the_delivery_makes_it_a_retry(examples: Path) -> None:
    class Unreachable(InMemoryLedger):
        def begin_delivery(self, digest: str) -> int:
            raise ServiceUnavailable("ledger database: connection refused")

    world = World()
    handler = MessageHandler(
        ingest=world.ingest,
        remove=world.remove,
        retries=RetrySchedule(),
        unfinished=Unreachable(),
    )
    body = json.dumps(golden_event(examples, ESSENCE)).encode()
    outcome = handler.handle(Delivery(body=body))
    assert isinstance(outcome, Retry)
    assert "connection refused" in outcome.reason
    assert world.records.searches == []

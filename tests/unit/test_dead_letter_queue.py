"""The dead-letter queue adapter's own decisions, on a stand-in for pika's channel: ids, times,
and what a replay commits, keeps and hands back."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pika
from pika.exceptions import ShortStringTooLong

from s3_events_handler.adapters.rabbitmq.dead_letters import DeadLetterQueue, ParkedMessage
from tests.support import amqp

SETTINGS = amqp.settings_for("127.0.0.1", 5672, "unit")


@dataclass
class Method:
    delivery_tag: int
    message_count: int = 0


@dataclass
class Declared:
    method: Method


@dataclass
class FakeChannel:
    """Hands out `queue` with basic_get and writes down everything else, in order."""

    queue: deque[tuple[Any, bytes]]
    calls: list[tuple[str, Any]] = field(default_factory=list)
    refuse: set[bytes] = field(default_factory=set)
    tag: int = 0

    def queue_declare(self, queue: str, passive: bool) -> Declared:
        assert passive
        return Declared(Method(0, len(self.queue)))

    def basic_get(self, queue: str, auto_ack: bool) -> tuple[Any, Any, Any]:
        assert not auto_ack
        if not self.queue:
            return None, None, None
        self.tag += 1
        properties, body = self.queue.popleft()
        return Method(self.tag), properties, body

    def basic_publish(
        self, exchange: str, routing_key: str, body: bytes, properties: Any, mandatory: bool
    ) -> None:
        if body in self.refuse:
            raise ShortStringTooLong("a header pika cannot encode again")
        self.calls.append(("publish", (exchange, routing_key, body, properties)))

    def tx_select(self) -> None:
        self.calls.append(("tx_select", None))

    def tx_commit(self) -> None:
        self.calls.append(("commit", None))

    def basic_ack(self, delivery_tag: int) -> None:
        self.calls.append(("ack", delivery_tag))

    def basic_nack(self, delivery_tag: int, multiple: bool, requeue: bool) -> None:
        self.calls.append(("nack", (delivery_tag, multiple, requeue)))

    def add_on_return_callback(self, callback: Any) -> None:
        pass


@dataclass
class FakeConnection:
    channel_: FakeChannel
    is_open: bool = True

    def channel(self) -> FakeChannel:
        return self.channel_

    def process_data_events(self, time_limit: float) -> None:
        pass

    def close(self) -> None:
        self.is_open = False


def queue_of(*messages: tuple[Any, bytes]) -> tuple[DeadLetterQueue, FakeChannel]:
    channel = FakeChannel(deque(messages))
    connection = FakeConnection(channel)
    return DeadLetterQueue(SETTINGS, open_connection=lambda settings: connection), channel


def properties(**values: Any) -> Any:
    return pika.BasicProperties(**values)


def test_a_message_id_is_the_id_else_a_hash_that_stays_the_same() -> None:
    queue, _ = queue_of(
        (properties(message_id="msg-1"), b"a"),
        (properties(headers={"x-error": "bad"}), b"b"),
        (properties(headers={"x-error": "bad"}), b"b"),
        (properties(headers={"x-error": "worse"}), b"b"),
    )
    named, hashed, same, other = queue.browse()
    assert named.id == "msg-1"
    assert len(hashed.id) == 12 and hashed.id == same.id != other.id


def test_the_time_is_the_dead_letter_stamp_else_the_broker_s_else_the_message_s() -> None:
    def parked(headers: dict[str, Any], timestamp: int | None = None) -> ParkedMessage:
        return ParkedMessage("id", b"", headers, properties(timestamp=timestamp))

    moved = datetime(2024, 5, 1, 12, 0, 0)  # pika decodes AMQP timestamps as naive UTC
    death = {"x-death": [{"time": moved}]}
    stamp = {"x-dead-lettered-at": "2024-05-01T12:30:05+00:00"}
    assert parked({**stamp, **death}, 1).dead_lettered_at == datetime(
        2024, 5, 1, 12, 30, 5, tzinfo=UTC
    )
    assert parked(death, 1).dead_lettered_at == moved.replace(tzinfo=UTC)
    assert parked({}, 1714566605).dead_lettered_at == datetime(2024, 5, 1, 12, 30, 5, tzinfo=UTC)
    assert parked({"x-dead-lettered-at": "garbage"}).dead_lettered_at is None


def test_browsing_hands_every_message_back_with_one_nack() -> None:
    queue, channel = queue_of((properties(), b"a"), (properties(), b"b"))
    assert [m.body for m in queue.browse()] == [b"a", b"b"]
    assert channel.calls == [("nack", (2, True, True))]


def test_each_replay_commits_its_publish_with_its_ack_and_the_rest_go_back() -> None:
    queue, channel = queue_of(
        (properties(headers={"x-error": "bad", "x-attempt": 3, "x-pid": "k98z0d4w1q"}), b"a"),
        (properties(headers={"x-error": "other"}), b"b"),
        (properties(headers={"x-error": "bad"}, user_id="someone-else"), b"c"),
    )
    heard: list[bytes] = []
    tally = queue.replay(lambda m: m.reason == "bad", lambda m: heard.append(m.body))

    assert (tally.replayed, tally.not_chosen, heard) == (2, 1, [b"a", b"c"])
    kinds = [kind for kind, _ in channel.calls]
    assert kinds == ["tx_select", "publish", "ack", "commit", "publish", "ack", "commit",
                     "nack", "commit"]  # fmt: skip
    _, (exchange, routing_key, body, first) = channel.calls[1]
    assert (exchange, routing_key, body) == ("", SETTINGS.incoming_queue, b"a")
    assert first.headers == {"x-pid": "k98z0d4w1q"}
    third = channel.calls[4][1][3]
    assert third.user_id is None  # the broker refuses another user's user_id
    assert channel.calls[7] == ("nack", (2, True, True))


def test_a_dead_letter_pika_cannot_encode_again_stays_and_is_reported() -> None:
    queue, channel = queue_of((properties(), b"stuck"), (properties(), b"fine"))
    channel.refuse.add(b"stuck")
    tally = queue.replay(lambda m: True, lambda m: None)
    assert tally.replayed == 1
    [(message, why)] = tally.unpublishable
    assert message.body == b"stuck" and "ShortStringTooLong" in why
    assert ("nack", (1, True, True)) in channel.calls

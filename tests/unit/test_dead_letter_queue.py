"""The dead-letter queue adapter's own decisions, on a stand-in for the broker
(`fake_dead_letter_broker`): ids, times, and what a pass reads, holds, rotates, commits and
hands back."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from s3_events_handler.adapters.rabbitmq.dead_letter_model import Tally, dead_letter_id
from s3_events_handler.adapters.rabbitmq.dead_letters import DeadLetterQueue
from s3_events_handler.adapters.rabbitmq.headers import dead_lettered_at, text_of
from s3_events_handler.adapters.rabbitmq.settlement import Received
from tests.unit.fake_dead_letter_broker import (
    DLQ,
    INCOMING,
    FakeBroker,
    numbered,
    properties,
    queue_of,
)


def browse(queue: DeadLetterQueue, seen: list[Received], wanted: int | None = None) -> Tally:
    """A pass writing down each message, wanting no more after `wanted`."""
    return queue.browse(
        lambda message: True,
        seen.append,
        enough=lambda: wanted is not None and len(seen) >= wanted,
    )


def test_a_message_id_is_the_id_else_a_hash_that_stays_the_same() -> None:
    queue = queue_of(
        FakeBroker.holding(
            (properties(message_id="msg-1"), b"a"),
            (properties(headers={"x-error": "bad"}), b"b"),
            (properties(headers={"x-error": "bad"}), b"b"),
            (properties(headers={"x-error": "worse"}), b"b"),
        )
    )
    seen: list[Received] = []
    browse(queue, seen)
    named, hashed, same, other = seen
    assert dead_letter_id(named) == "msg-1"
    assert len(dead_letter_id(hashed)) == 12
    assert dead_letter_id(hashed) == dead_letter_id(same) != dead_letter_id(other)


def test_the_time_is_the_dead_letter_stamp_else_the_broker_s_else_the_message_s() -> None:
    def parked(headers: dict[str, Any], timestamp: int | None = None) -> Received:
        return Received(0, properties(headers=headers, timestamp=timestamp), b"")

    moved = datetime(2024, 5, 1, 12, 0, 0)  # pika decodes AMQP timestamps as naive UTC
    death = {"x-death": [{"time": moved}]}
    stamp = {"x-dead-lettered-at": "2024-05-01T12:30:05+00:00"}
    assert dead_lettered_at(parked({**stamp, **death}, 1).properties) == datetime(
        2024, 5, 1, 12, 30, 5, tzinfo=UTC
    )
    assert dead_lettered_at(parked(death, 1).properties) == moved.replace(tzinfo=UTC)
    assert dead_lettered_at(parked({}, 1714566605).properties) == datetime(
        2024, 5, 1, 12, 30, 5, tzinfo=UTC
    )
    assert dead_lettered_at(parked({"x-dead-lettered-at": "garbage"}).properties) is None


def bodies(messages: list[Received]) -> list[bytes]:
    return [message.body for message in messages]


def test_a_queue_within_the_window_is_handed_back_in_place_and_not_rewritten() -> None:
    broker = FakeBroker.holding(*numbered(4))
    before = list(broker.queues[DLQ])
    seen: list[Received] = []
    tally = browse(queue_of(broker, window=4), seen)
    assert bodies(seen) == [f"body-{n}".encode() for n in range(4)]
    assert broker.queues[DLQ] == before  # the very messages, not copies
    assert (tally.looked_at, tally.short) == (4, False)


def test_a_longer_queue_is_rotated_once_round_never_more_than_a_window_unacked() -> None:
    broker = FakeBroker.holding(*numbered(23))
    seen: list[Received] = []
    tally = browse(queue_of(broker, window=4), seen)
    expected = [f"body-{n}".encode() for n in range(23)]
    assert bodies(seen) == expected
    assert broker.bodies() == expected
    assert [s.properties.message_id for s in broker.queues[DLQ]] == [f"msg-{n}" for n in range(23)]
    assert broker.most_unacked <= 4
    assert (tally.looked_at, tally.short, broker.unacked) == (23, False, {})


def test_wanting_no_more_within_the_window_stops_at_once_and_rewrites_nothing() -> None:
    broker = FakeBroker.holding(*numbered(23))
    before = list(broker.queues[DLQ])
    seen: list[Received] = []
    tally = browse(queue_of(broker, window=4), seen, wanted=3)
    assert len(seen) == 3 and tally.looked_at == 3
    assert broker.queues[DLQ] == before and broker.most_unacked <= 4


def test_wanting_no_more_past_the_window_still_brings_the_queue_round() -> None:
    broker = FakeBroker.holding(*numbered(23))
    seen: list[Received] = []
    tally = browse(queue_of(broker, window=4), seen, wanted=7)
    assert len(seen) == 7 and tally.looked_at == 7
    assert broker.bodies() == [f"body-{n}".encode() for n in range(23)]
    assert broker.most_unacked <= 4


def test_a_rotated_copy_keeps_everything_but_a_user_id_not_ours() -> None:
    headers = {"x-error": "bad", "x-pid": "k98z0d4w1q", "x-attempt": 8}
    broker = FakeBroker.holding(
        (properties(headers=headers, user_id="someone-else", correlation_id="c"), b"a"),
        *numbered(5),
    )
    queue_of(broker, window=2).browse(lambda message: True, lambda message: None)
    rotated = broker.queues[DLQ][0]
    assert rotated.body == b"a"
    assert rotated.properties.headers == headers
    assert (rotated.properties.correlation_id, rotated.properties.user_id) == ("c", None)


def test_each_replay_commits_its_copy_with_its_ack_and_the_rest_keep_their_order() -> None:
    broker = FakeBroker.holding(
        (properties(headers={"x-error": "bad", "x-attempt": 3, "x-pid": "k98z0d4w1q"}), b"a"),
        (properties(headers={"x-error": "other"}), b"b"),
        (properties(headers={"x-error": "bad"}, user_id="someone-else"), b"c"),
        *[(properties(headers={"x-error": "other"}), f"o{n}".encode()) for n in range(6)],
    )
    heard: list[tuple[bytes, list[bytes]]] = []
    tally = queue_of(broker, window=2).replay(
        lambda m: text_of(m.headers, "x-error") == "bad",
        lambda m: heard.append((m.body, broker.bodies(INCOMING))),
    )
    assert (tally.removed, tally.kept) == (2, 7)
    # Each replay was heard of once committed: its copy already in the incoming queue.
    assert heard == [(b"a", [b"a"]), (b"c", [b"a", b"c"])]
    first, third = broker.queues[INCOMING]
    assert first.properties.headers == {"x-pid": "k98z0d4w1q"}
    assert third.properties.user_id is None  # the broker refuses another user's user_id
    assert broker.bodies() == [b"b", *[f"o{n}".encode() for n in range(6)]]
    assert broker.most_unacked <= 2


def test_a_dead_letter_pika_cannot_encode_again_stays_and_is_reported() -> None:
    broker = FakeBroker.holding((properties(), b"stuck"), (properties(), b"fine"))
    broker.refuse.add(b"stuck")
    tally = queue_of(broker).replay(lambda m: True, lambda m: None)
    assert tally.removed == 1
    [(_, why)] = tally.unpublishable
    assert "ShortStringTooLong" in why
    assert broker.bodies() == [b"stuck"]


def test_one_that_cannot_be_rotated_is_handed_back_at_the_head_and_said() -> None:
    broker = FakeBroker.holding(*numbered(10))
    broker.refuse.add(b"body-6")
    tally = queue_of(broker, window=3).browse(lambda message: True, lambda message: None)
    assert broker.bodies() == [b"body-6", *[f"body-{n}".encode() for n in range(10) if n != 6]]
    assert [letter_id for letter_id, _ in tally.out_of_place] == ["msg-6"]
    assert (tally.looked_at, tally.short) == (10, False)


def test_a_drop_removes_only_the_chosen_each_committed_before_it_is_told() -> None:
    broker = FakeBroker.holding(*numbered(9))
    told: list[tuple[str, int]] = []
    tally = queue_of(broker, window=2).drop(
        lambda m: dead_letter_id(m) in {"msg-1", "msg-7"},
        lambda m: told.append((dead_letter_id(m), len(broker.bodies()))),
    )
    assert tally.removed == 2
    assert [letter_id for letter_id, _ in told] == ["msg-1", "msg-7"]
    assert broker.bodies() == [f"body-{n}".encode() for n in range(9) if n not in (1, 7)]
    assert broker.most_unacked <= 2


@settings(max_examples=200, deadline=None)
@given(
    count=st.integers(0, 30),
    window=st.integers(1, 6),
    removed=st.sets(st.integers(0, 29)),
    stop_after=st.one_of(st.none(), st.integers(1, 30)),
    drop=st.booleans(),
)
def test_any_pass_looks_at_each_once_holds_a_window_and_keeps_the_rest_in_order(
    count: int, window: int, removed: set[int], stop_after: int | None, drop: bool
) -> None:
    broker = FakeBroker.holding(*numbered(count))
    seen: list[str] = []
    wanted = {f"msg-{n}" for n in removed}

    def chosen(message: Received) -> bool:
        seen.append(dead_letter_id(message))
        return dead_letter_id(message) in wanted

    def enough() -> bool:
        return stop_after is not None and len(seen) >= stop_after

    queue = queue_of(broker, window=window)
    act = queue.drop if drop else queue.replay
    tally = act(chosen, lambda message: None, enough=enough)

    looked = count if stop_after is None else min(count, stop_after)
    assert seen == [f"msg-{n}" for n in range(looked)]
    gone = [n for n in range(looked) if n in removed]
    assert broker.bodies() == [f"body-{n}".encode() for n in range(count) if n not in gone]
    assert broker.bodies(INCOMING) == ([] if drop else [f"body-{n}".encode() for n in gone])
    assert broker.most_unacked <= window and broker.unacked == {}
    assert (tally.looked_at, tally.removed, tally.short) == (looked, len(gone), False)

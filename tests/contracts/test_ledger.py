"""The `Ledger` port and the crash count (`ConsumerLedger`): the in-memory fake, SQLite and
PostgreSQL. What only the SQL ledgers do (durability, pruning, pools, migrations, leases
that lapse) is in tests/integration/test_ledger.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from s3_events_handler.adapters.ledger_postgres import PostgresLedger
from s3_events_handler.adapters.ledger_sqlite import SqliteLedger
from s3_events_handler.adapters.memory import InMemoryLedger
from s3_events_handler.application.limits import ConsumerLedger
from s3_events_handler.domain.errors import ClaimedElsewhere
from s3_events_handler.domain.events import parse_record
from s3_events_handler.domain.model import LedgerEntry, Step
from s3_events_handler.domain.ports import TransfersSent
from tests.support.ledger_store import recorded


class Consumer:
    """Each call is another consumer's ledger on the same store (the first call, the first);
    `recorded` is what the store holds of an event, read from the store itself."""

    def __init__(
        self,
        open_one: Callable[[], ConsumerLedger],
        recorded: Callable[[str], LedgerEntry | None],
    ) -> None:
        self._open_one = open_one
        self.recorded = recorded

    def __call__(self) -> ConsumerLedger:
        return self._open_one()


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def consumer(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Consumer]:
    opened: list[SqliteLedger | PostgresLedger] = []
    first: list[InMemoryLedger] = []
    if request.param == "memory":

        def open_one() -> ConsumerLedger:
            if not first:
                first.append(InMemoryLedger(owner="consumer-1"))
                return first[0]
            return first[0].beside(f"consumer-{len(first) + 1}")

        def read(identity: str) -> LedgerEntry | None:
            return first[0].entries.get(identity)

    else:
        store: Path | str = (
            tmp_path / "ledger.sqlite3"
            if request.param == "sqlite"
            else request.getfixturevalue("postgres_dsn")
        )

        def open_one() -> ConsumerLedger:
            opened.append(SqliteLedger(store) if isinstance(store, Path) else PostgresLedger(store))
            return opened[-1]

        def read(identity: str) -> LedgerEntry | None:
            return recorded(store, identity)

    yield Consumer(open_one, read)
    for ledger in opened:
        ledger.close()


def test_an_unknown_event_is_not_recorded(consumer: Consumer) -> None:
    consumer()
    assert consumer.recorded("never-seen") is None


def test_a_new_event_is_claimed_with_nothing_done_yet(consumer: Consumer) -> None:
    ledger = consumer()
    assert ledger.claim("event-1") is None


def test_a_live_claim_keeps_a_second_consumer_out_until_it_is_released(
    consumer: Consumer,
) -> None:
    first, second = consumer(), consumer()
    first.claim("event-1")
    with pytest.raises(ClaimedElsewhere):
        second.claim("event-1")
    with pytest.raises(ClaimedElsewhere):
        second.claim("event-1")  # refusing is not taking it over
    first.release("event-1")
    assert second.claim("event-1") is None
    with pytest.raises(ClaimedElsewhere):
        first.claim("event-1")  # now the second's


def test_the_first_pid_stored_for_an_event_wins(consumer: Consumer) -> None:
    ledger = consumer()
    assert ledger.claim("event-1") is None
    assert ledger.claim_pid("event-1", "a1b2c3d4e5") == "a1b2c3d4e5"
    assert ledger.claim_pid("event-1", "z9y8x7w6v5") == "a1b2c3d4e5"
    assert consumer.recorded("event-1") == LedgerEntry("event-1", "a1b2c3d4e5", Step.PID_CLAIMED)
    ledger.release("event-1")
    assert ledger.claim("event-1") == LedgerEntry("event-1", "a1b2c3d4e5", Step.PID_CLAIMED)
    assert ledger.claim_pid("event-1", "z9y8x7w6v5") == "a1b2c3d4e5"


def test_steps_only_move_forward(consumer: Consumer) -> None:
    ledger = consumer()
    ledger.claim("event-1")
    ledger.claim_pid("event-1", "a1b2c3d4e5")
    ledger.advance("event-1", Step.RELATION_ADDED)
    ledger.advance("event-1", Step.PID_CLAIMED)
    assert consumer.recorded("event-1") == LedgerEntry("event-1", "a1b2c3d4e5", Step.RELATION_ADDED)
    ledger.release("event-1", Step.TRANSFER_REQUESTED)
    ledger.release("event-1", Step.SIDECAR_UPLOADED)
    assert consumer.recorded("event-1") == LedgerEntry(
        "event-1", "a1b2c3d4e5", Step.TRANSFER_REQUESTED
    )


def test_a_release_with_a_step_records_it_and_lets_go(consumer: Consumer) -> None:
    first, second = consumer(), consumer()
    first.claim("event-1")
    first.claim_pid("event-1", "a1b2c3d4e5")
    first.release("event-1", Step.RELATION_ADDED)
    resumed = LedgerEntry("event-1", "a1b2c3d4e5", Step.RELATION_ADDED)
    assert consumer.recorded("event-1") == resumed
    assert second.claim("event-1") == resumed  # let go: the next consumer resumes
    with pytest.raises(ClaimedElsewhere):
        first.advance("event-1", Step.TRANSFER_REQUESTED)  # no longer the holder


def test_a_finished_event_is_returned_and_not_claimed(consumer: Consumer) -> None:
    first, second = consumer(), consumer()
    first.claim("event-1")
    first.claim_pid("event-1", "a1b2c3d4e5")
    first.release("event-1", Step.TRANSFER_REQUESTED)
    finished = LedgerEntry("event-1", "a1b2c3d4e5", Step.TRANSFER_REQUESTED)
    assert second.claim("event-1") == finished
    assert first.claim("event-1") == finished  # nobody holds it: the other may look too
    with pytest.raises(ClaimedElsewhere):
        second.advance("event-1", Step.REMOVED)  # looking is not holding
    with pytest.raises(ClaimedElsewhere):
        second.claim_pid("event-1", "z9y8x7w6v5")
    assert consumer.recorded("event-1") == finished


def test_only_the_holder_stores_a_pid_or_records_a_step(consumer: Consumer) -> None:
    holder, other = consumer(), consumer()
    holder.claim("event-1")
    with pytest.raises(ClaimedElsewhere):
        other.claim_pid("event-1", "z9y8x7w6v5")
    with pytest.raises(ClaimedElsewhere):
        other.advance("event-1", Step.RELATION_ADDED)
    assert holder.claim_pid("event-1", "a1b2c3d4e5") == "a1b2c3d4e5"
    assert consumer.recorded("event-1") == LedgerEntry("event-1", "a1b2c3d4e5", Step.PID_CLAIMED)


def test_an_event_never_claimed_takes_no_pid_and_no_step(consumer: Consumer) -> None:
    ledger = consumer()
    with pytest.raises(ClaimedElsewhere):
        ledger.claim_pid("event-1", "a1b2c3d4e5")
    with pytest.raises(ClaimedElsewhere):
        ledger.advance("event-1", Step.RELATION_ADDED)
    assert consumer.recorded("event-1") is None


def test_deliveries_begun_and_not_ended_are_counted(consumer: Consumer) -> None:
    ledger = consumer()
    assert ledger.begin_delivery("digest-1") == 0
    assert ledger.begin_delivery("digest-1") == 1  # the first never ended: a death
    assert ledger.begin_delivery("digest-1") == 2
    assert ledger.begin_delivery("digest-2") == 0  # another message counts on its own


def test_a_handled_delivery_clears_the_count(consumer: Consumer) -> None:
    ledger = consumer()
    ledger.begin_delivery("digest-1")
    ledger.begin_delivery("digest-1")
    ledger.end_delivery("digest-1", handled=True)
    assert ledger.begin_delivery("digest-1") == 0


def test_a_delivery_not_handled_takes_only_itself_back(consumer: Consumer) -> None:
    ledger = consumer()
    ledger.begin_delivery("digest-1")  # died during this one
    ledger.begin_delivery("digest-1")
    ledger.end_delivery("digest-1", handled=False)  # claimed elsewhere: it comes back later
    assert ledger.begin_delivery("digest-1") == 1  # the death before it still counts


def test_the_count_is_shared_by_the_consumers_of_one_store(consumer: Consumer) -> None:
    first, second = consumer(), consumer()
    assert first.begin_delivery("digest-1") == 0
    assert second.begin_delivery("digest-1") == 1
    second.end_delivery("digest-1")
    assert first.begin_delivery("digest-1") == 0


def _identity_of(kind: str, bucket: str, key: str, request_id: str) -> str:
    return parse_record(
        {
            "eventName": f"{kind}:Put" if kind == "ObjectCreated" else f"{kind}:Delete",
            "userIdentity": {"principalId": "someone"},
            "responseElements": {"x-viaa-request-id": request_id},
            "s3": {
                "domain": {"name": "s3"},
                "bucket": {"name": bucket, "metadata": {"tenant": "OR-rf5kf25"}},
                "object": {"key": key},
            },
        }
    ).identity


@pytest.mark.parametrize("key", ["clip.mxf", "a key with spaces+plus/ünïcode 😀.mxf"])
def test_an_object_is_found_by_bucket_and_key_once_its_transfer_request_was_sent(
    consumer: Consumer, key: str
) -> None:
    ledger = consumer()
    assert isinstance(ledger, TransfersSent)
    sent = _identity_of("ObjectCreated", "bucket-a", key, "request-1")
    ledger.claim(sent)
    ledger.claim_pid(sent, "a1b2c3d4e5")
    assert not ledger.transfer_requested("bucket-a", key)  # taken in, not sent yet
    ledger.release(sent, Step.TRANSFER_REQUESTED)

    assert ledger.transfer_requested("bucket-a", key)
    assert not ledger.transfer_requested("bucket-b", key)
    assert not ledger.transfer_requested("bucket-a", key + "x")
    assert not ledger.transfer_requested("bucket-a", key[:-1])


def test_a_removal_is_no_transfer_sent(consumer: Consumer) -> None:
    ledger = consumer()
    assert isinstance(ledger, TransfersSent)
    removal = _identity_of("ObjectRemoved", "bucket-a", "clip.mxf", "request-1")
    ledger.claim(removal)
    ledger.release(removal, Step.REMOVED)

    assert not ledger.transfer_requested("bucket-a", "clip.mxf")

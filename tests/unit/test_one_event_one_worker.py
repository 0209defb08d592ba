"""Two consumers on one ledger given the same event, whatever the timing (contract §6).

Consumer A handles the event; at each of its calls to a port in turn (every step
boundary), consumer B is handed the same event and runs its whole attempt there.
B finds A's claim and backs off, or finds the event finished; when B's retry comes
back after A is done, it finds the event finished. Either way the event gets one PID,
one sidecar, one relation and one transfer request.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from s3_events_handler.adapters.memory import InMemoryLedger
from s3_events_handler.domain.errors import ClaimedElsewhere
from s3_events_handler.domain.model import S3Event
from s3_events_handler.domain.results import AlreadyHandled, Result, Sent
from s3_events_handler.domain.use_cases import IngestEssence, RemoveEssence
from tests.unit.builders import World, essence_record, event_of, golden_event

ESSENCE = "event-essence-created.json"
COLLATERAL = "event-collateral-created.json"
REMOVED = "event-removed.json"
KEY = "20261120-journaal-1900-a7f3c2d1-55e4-4b2a-9c1d-0e8f7a6b5c4d.MXF"


class Boundaries:
    """Counts the calls consumer A makes to its ports; before call number `at`, runs `meanwhile`."""

    def __init__(self, at: int, meanwhile: Callable[[], None]) -> None:
        self.at = at
        self.calls = 0
        self._meanwhile = meanwhile

    def crossed(self) -> None:
        if self.calls == self.at:
            self._meanwhile()
        self.calls += 1

    def around(self, port: Any) -> Any:
        return _Watched(port, self)


class _Watched:
    def __init__(self, port: Any, boundaries: Boundaries) -> None:
        self._port = port
        self._boundaries = boundaries

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._port, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self._boundaries.crossed()
            return method(*args, **kwargs)

        return call


def ingest_for(
    world: World, ledger: InMemoryLedger, boundaries: Boundaries | None
) -> IngestEssence:
    def port(fake: Any) -> Any:
        return boundaries.around(fake) if boundaries else fake

    return IngestEssence(
        records=port(world.records),
        pids=port(world.pids),
        organisations=port(world.organisations),
        transport=port(world.transport),
        transfers=port(world.transfers),
        destinations=world.destinations,
        ledger=port(ledger),
    )


def remove_for(
    world: World, ledger: InMemoryLedger, boundaries: Boundaries | None
) -> RemoveEssence:
    def port(fake: Any) -> Any:
        return boundaries.around(fake) if boundaries else fake

    return RemoveEssence(
        records=port(world.records), organisations=port(world.organisations), ledger=port(ledger)
    )


UseCaseFor = Callable[[World, InMemoryLedger, Boundaries | None], IngestEssence | RemoveEssence]


def race(
    world: World, event: S3Event, use_case_for: UseCaseFor, at: int
) -> tuple[Result, list[str], Boundaries]:
    """A handles `event`; B is handed it before A's call number `at`, and again (a retry)
    whenever it backed off, once A is done. Returns A's result, what became of each of B's
    attempts, and A's boundaries."""
    b_ledger = world.ledger.beside("consumer B")
    b_attempts: list[str] = []

    def consumer_b() -> None:
        try:
            result = use_case_for(world, b_ledger, None).execute(event, correlation_id="b")
            b_attempts.append(type(result).__name__)
        except ClaimedElsewhere:
            b_attempts.append("backed off")

    boundaries = Boundaries(at, consumer_b)
    a_ledger = world.ledger.beside("consumer A")
    a_result = use_case_for(world, a_ledger, boundaries).execute(event, correlation_id="a")
    if b_attempts[-1:] == ["backed off"]:
        consumer_b()  # the retry, after the shortest delay
    return a_result, b_attempts, boundaries


def calls_of_one_attempt(world: World, event: S3Event, use_case_for: UseCaseFor) -> int:
    probe = Boundaries(-1, lambda: None)
    use_case_for(world, world.ledger.beside("probe"), probe).execute(event, correlation_id="p")
    return probe.calls


def essence_world() -> World:
    return World()


def collateral_world() -> World:
    return World([essence_record("frag-1", local_id="MEDIA-0042", is_fragment=True)])


def removal_world() -> World:
    return World([essence_record("essence-1", key=KEY)])


def every_race(
    make_world: Callable[[], World], event: S3Event, use_case_for: UseCaseFor
) -> list[tuple[int, World, list[str]]]:
    """Each boundary of A's attempt, the world after B was handed the event there, and what
    became of each attempt (A's first)."""
    count = calls_of_one_attempt(make_world(), event, use_case_for)
    assert count >= 2  # at least the claim and the work behind it: there is something to race
    races = []
    for at in range(count):
        world = make_world()
        a_result, b_attempts, _ = race(world, event, use_case_for, at)
        races.append((at, world, [type(a_result).__name__, *b_attempts]))
    return races


def one_did_the_work(attempts: list[str], done: str) -> bool:
    """One attempt did the work; the others found it done, or backed off and then did."""
    return (
        attempts.count(done) == 1
        and set(attempts) <= {done, "AlreadyHandled", "backed off"}
        and attempts[-1] != "backed off"
    )


def test_an_essence_handed_to_two_consumers_gets_one_pid_sidecar_and_request(
    examples: Path,
) -> None:
    event = event_of(golden_event(examples, ESSENCE))
    for at, world, attempts in every_race(essence_world, event, ingest_for):
        assert one_did_the_work(attempts, "Sent"), (at, attempts)
        assert len(world.pids.minted) == 1, at
        assert world.transport.uploads == [f"/VRT/TAPE-SHARE-EVENTS/{world.pids.minted[0]}.xml"]
        assert len(world.transfers.published) == 1, at


def test_a_collateral_handed_to_two_consumers_gets_one_relation_sidecar_and_request(
    examples: Path,
) -> None:
    event = event_of(golden_event(examples, COLLATERAL))
    for at, world, attempts in every_race(collateral_world, event, ingest_for):
        assert one_did_the_work(attempts, "Sent"), (at, attempts)
        assert [relation.fragment_id for relation in world.records.relations] == ["frag-1"], at
        assert world.transport.uploads == ["/VRT/DISK-SHARE-EVENTS/k98z0d4w1q_closedOt.xml"]
        assert len(world.transfers.published) == 1, at


def test_a_removal_handed_to_two_consumers_deletes_each_record_once(examples: Path) -> None:
    event = event_of(golden_event(examples, REMOVED))
    for at, world, attempts in every_race(removal_world, event, remove_for):
        assert one_did_the_work(attempts, "Removed"), (at, attempts)
        assert world.records.deleted == ["essence-1"], at


def test_the_second_consumer_does_nothing_but_look_at_the_ledger(examples: Path) -> None:
    world = World()
    event = event_of(golden_event(examples, ESSENCE))
    a_ledger = world.ledger.beside("consumer A")
    a_ledger.claim(event.identity)
    watched = Boundaries(-1, lambda: None)
    b = ingest_for(world, world.ledger.beside("consumer B"), watched)
    with pytest.raises(ClaimedElsewhere):
        b.execute(event, correlation_id="b")
    assert watched.calls == 1  # the claim, and nothing else
    assert world.records.searches == [] and world.pids.minted == []


def test_a_consumer_that_died_holds_the_event_only_until_its_lease_lapses(
    examples: Path,
) -> None:
    world = World()
    event = event_of(golden_event(examples, ESSENCE))
    world.crashed_attempt(event.identity, pid="a1b2c3d4e5")  # its lease lapsed since

    result = world.ingest.execute(event, correlation_id="c")

    assert result == Sent(
        key=KEY,
        cp_name="VRT",
        folder="TAPE-SHARE-EVENTS",
        sidecar_file="a1b2c3d4e5.xml",
        pid="a1b2c3d4e5",  # resumed from the last step recorded: no second PID
    )
    assert world.pids.minted == []


def test_a_consumer_whose_lease_lapsed_stops_at_its_next_ledger_write(examples: Path) -> None:
    """A holder cut off long enough for its lease to lapse, while another took over, records
    nothing more and sends nothing more once it next speaks to the ledger."""
    world = World()
    event = event_of(golden_event(examples, ESSENCE))
    slow = world.ledger.beside("slow consumer")

    def lapse_and_take_over() -> None:
        world.clock.now += slow.lease_seconds
        world.ledger.beside("consumer B").claim(event.identity)

    # After the claim, organisations, search and mint: before the PID is stored.
    use_case = ingest_for(world, slow, Boundaries(4, lapse_and_take_over))
    with pytest.raises(ClaimedElsewhere):
        use_case.execute(event, correlation_id="a")
    assert world.transport.uploads == [] and world.transfers.published == []
    assert world.ledger.entries.get(event.identity) is None  # its PID was never stored


def test_a_finished_event_is_not_claimed_again(examples: Path) -> None:
    world = World()
    event = event_of(golden_event(examples, ESSENCE))
    world.ingest.execute(event, correlation_id="a")
    result = world.ingest.execute(event, correlation_id="b")
    assert result == AlreadyHandled(key=KEY, pid="k98z0d4w1q")
    assert world.ledger.claims == {}

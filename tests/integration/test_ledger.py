"""The ledger adapters against a real SQLite file and a real PostgreSQL server: what only they
do (durability, leases that lapse, races, pools, pruning, migrations). The port's own
behaviour, which the in-memory ledger shares, is tests/contracts/test_ledger.py."""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from s3_events_handler.adapters.ledger_postgres import PostgresLedger, inspect_database
from s3_events_handler.adapters.ledger_sqlite import SqliteLedger, inspect_location
from s3_events_handler.domain.errors import ClaimedElsewhere, ServiceUnavailable, System
from s3_events_handler.domain.model import CLAIM_LEASE_SECONDS, LedgerEntry, Step
from s3_events_handler.domain.ports import Ledger
from tests.support.ledger_store import recorded
from tests.support.loopback import LOOPBACK
from tests.support.relay import Relay
from tests.support.threads import side_by_side

Opener = Callable[[], SqliteLedger | PostgresLedger]


class OpenerWith(Protocol):
    def __call__(self, *, lease_seconds: float) -> SqliteLedger | PostgresLedger: ...


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """A SQLite file's path, or a PostgreSQL database's DSN."""
    if request.param == "sqlite":
        return tmp_path / "ledger.sqlite3"
    dsn: str = request.getfixturevalue("postgres_dsn")
    return dsn


@pytest.fixture
def open_ledger_with(store: Path | str) -> Iterator[OpenerWith]:
    """Opens a ledger on `store`, each a consumer of its own; all are closed afterwards."""
    opened: list[SqliteLedger | PostgresLedger] = []

    def open_one(*, lease_seconds: float) -> SqliteLedger | PostgresLedger:
        if isinstance(store, Path):
            opened.append(SqliteLedger(store, lease_seconds=lease_seconds))
        else:
            opened.append(PostgresLedger(store, lease_seconds=lease_seconds))
        return opened[-1]

    yield open_one
    for ledger in opened:
        ledger.close()


@pytest.fixture
def open_ledger(open_ledger_with: OpenerWith) -> Opener:
    return lambda: open_ledger_with(lease_seconds=CLAIM_LEASE_SECONDS)


def drop_claim_columns(store: Path | str) -> None:
    """Make the table look as it did before there were claims."""
    if isinstance(store, Path):
        with contextlib.closing(sqlite3.connect(store)) as db:
            db.execute("ALTER TABLE s3_events_ledger DROP COLUMN claimed_by")
            db.execute("ALTER TABLE s3_events_ledger DROP COLUMN claimed_until")
            db.commit()
    else:
        with psycopg.connect(store) as pg:
            pg.execute(
                "ALTER TABLE s3_events_ledger DROP COLUMN claimed_by, DROP COLUMN claimed_until"
            )


def taken_in(ledger: Ledger, identity: str, pid: str, step: Step = Step.PID_CLAIMED) -> None:
    """An attempt that claimed the event, stored its PID, got to `step` and let go."""
    ledger.claim(identity)
    ledger.claim_pid(identity, pid)
    ledger.release(identity, step)


def test_what_was_written_survives_a_restart(open_ledger: Opener, store: Path | str) -> None:
    first = open_ledger()
    first.claim("event-1")
    first.claim_pid("event-1", "a1b2c3d4e5")
    first.advance("event-1", Step.RELATION_ADDED)
    first.close()
    open_ledger()
    assert recorded(store, "event-1") == LedgerEntry("event-1", "a1b2c3d4e5", Step.RELATION_ADDED)


def test_consumers_racing_for_one_event_leave_it_to_one(open_ledger: Opener) -> None:
    ledgers = [open_ledger() for _ in range(6)]
    start = threading.Barrier(len(ledgers))
    winners: list[Ledger] = []
    refused: list[Ledger] = []

    def claim(ledger: SqliteLedger | PostgresLedger) -> None:
        start.wait()
        try:
            ledger.claim("contested")
            winners.append(ledger)
        except ClaimedElsewhere:
            refused.append(ledger)

    threads = [threading.Thread(target=claim, args=(ledger,)) for ledger in ledgers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert len(winners) == 1 and len(refused) == len(ledgers) - 1
    for loser in refused:
        with pytest.raises(ClaimedElsewhere):
            loser.claim_pid("contested", "z9y8x7w6v5")  # no PID but the holder's
    assert winners[0].claim_pid("contested", "a1b2c3d4e5") == "a1b2c3d4e5"


def test_a_claim_lapses_with_its_lease_and_the_next_consumer_resumes(
    open_ledger_with: OpenerWith,
) -> None:
    died = open_ledger_with(lease_seconds=1)
    died.claim("event-1")
    died.claim_pid("event-1", "a1b2c3d4e5")
    died._closing.set()  # its heartbeat stops, as after a SIGKILL; its connection stays
    other = open_ledger_with(lease_seconds=1)
    with pytest.raises(ClaimedElsewhere):
        other.claim("event-1")
    time.sleep(1.5)
    assert other.claim("event-1") == LedgerEntry("event-1", "a1b2c3d4e5", Step.PID_CLAIMED)
    assert other.claim_pid("event-1", "z9y8x7w6v5") == "a1b2c3d4e5"
    with pytest.raises(ClaimedElsewhere):
        died.advance("event-1", Step.RELATION_ADDED)  # too late: the claim moved on


def test_a_claim_is_renewed_while_its_holder_lives(open_ledger_with: OpenerWith) -> None:
    holder = open_ledger_with(lease_seconds=1)
    holder.claim("event-1")
    other = open_ledger_with(lease_seconds=1)
    time.sleep(2.5)  # more than two leases: only the heartbeat keeps it
    with pytest.raises(ClaimedElsewhere):
        other.claim("event-1")
    holder.release("event-1")
    assert other.claim("event-1") is None


def test_the_workers_of_one_consumer_share_its_ledger_and_lose_no_write(
    open_ledger: Opener,
) -> None:
    ledger = open_ledger()
    workers, events = 16, 10

    def work(n: int) -> None:
        for event in range(events):
            identity = f"worker-{n}-event-{event}"
            assert ledger.claim(identity) is None
            ledger.claim_pid(identity, f"{n:03d}{event:07d}")
            ledger.release(identity, Step.TRANSFER_REQUESTED)

    side_by_side(work, workers)

    for n in range(workers):
        for event in range(events):
            identity = f"worker-{n}-event-{event}"
            expected = LedgerEntry(identity, f"{n:03d}{event:07d}", Step.TRANSFER_REQUESTED)
            assert ledger.claim(identity) == expected  # finished: returned, not claimed


def test_a_ledger_made_before_claims_gets_their_columns(
    open_ledger: Opener, store: Path | str
) -> None:
    open_ledger().close()
    drop_claim_columns(store)
    second, third = open_ledger(), open_ledger()
    second.claim("event-1")
    with pytest.raises(ClaimedElsewhere):
        third.claim("event-1")


def test_only_the_pid_and_the_relation_wait_for_the_disk(tmp_path: Path) -> None:
    """SQLite (WAL) keeps every commit across a crash of the process; across a power cut only
    those synced. The PID and the relation are: lost, a new attempt would mint a second PID
    or post a second relation. The transfer request's step need not be: a new attempt that
    does not know of it sends the same request again, with the same PID. Nor the claim: a
    power cut stops every consumer of the file, and a lost claim lapses. All on the worker's
    one connection, switched to FULL for the writes that wait."""
    ledger = SqliteLedger(tmp_path / "ledger.sqlite3")
    db = ledger._connection()
    modes = [
        db.execute(f"PRAGMA {pragma}").fetchone()[0] for pragma in ("journal_mode", "synchronous")
    ]
    statements: list[str] = []
    db.set_trace_callback(statements.append)
    try:
        ledger.claim("event-1")
        ledger.claim_pid("event-1", "a1b2c3d4e5")
        ledger.advance("event-1", Step.RELATION_ADDED)
        ledger.release("event-1", Step.TRANSFER_REQUESTED)
        on_disk = sqlite3.connect(tmp_path / "ledger.sqlite3")
        step = on_disk.execute("SELECT step FROM s3_events_ledger").fetchone()[0]
        on_disk.close()
    finally:
        ledger.close()
    synced, unsynced = writes_by_sync_mode(statements, start="NORMAL")

    assert modes == ["wal", 1]  # NORMAL
    assert synced == ["UPDATE", "UPDATE"]  # the PID, the relation
    # The claim, then the transfer request's step with the claim let go.
    assert unsynced == ["INSERT", "UPDATE"]
    assert step == Step.TRANSFER_REQUESTED  # committed: another process sees it


def writes_by_sync_mode(statements: list[str], *, start: str) -> tuple[list[str], list[str]]:
    """The verbs of the statements run with synchronous FULL, and of those run without."""
    mode = start
    synced: list[str] = []
    unsynced: list[str] = []
    for sql in statements:
        if sql.startswith("PRAGMA synchronous="):
            mode = sql.removeprefix("PRAGMA synchronous=")
        else:
            (synced if mode == "FULL" else unsynced).append(sql.split()[0])
    return synced, unsynced


def test_old_entries_are_pruned_when_the_ledger_opens(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    taken_in(SqliteLedger(path), "old", "a1b2c3d4e5")
    with sqlite3.connect(path) as db:
        db.execute("UPDATE s3_events_ledger SET updated_at = updated_at - 31 * 86400")
    taken_in(SqliteLedger(path), "new", "z9y8x7w6v5")
    SqliteLedger(path, retention_days=30)
    assert recorded(path, "old") is None
    assert recorded(path, "new") is not None


def test_an_unwritable_sqlite_file_is_a_transient_failure(tmp_path: Path) -> None:
    with pytest.raises(ServiceUnavailable):
        SqliteLedger(tmp_path / "no-such-folder" / "ledger.sqlite3")


def test_a_postgres_server_that_does_not_answer_stops_the_opening_without_its_password() -> None:
    with pytest.raises(ServiceUnavailable) as raised:
        PostgresLedger("postgresql://s3events:pw-not-to-show@127.0.0.1:1/s3events", timeout=2)
    assert "pw-not-to-show" not in str(raised.value)
    assert raised.value.system is System.LEDGER


def test_a_postgres_dsn_that_cannot_be_parsed_is_refused_without_its_password() -> None:
    with pytest.raises(ServiceUnavailable) as raised:
        PostgresLedger("host=127.0.0.1 user=s3events pw-not-to-show")
    assert "pw-not-to-show" not in str(raised.value)


def test_a_dropped_postgres_connection_is_reopened(postgres_dsn: str) -> None:
    ledger = PostgresLedger(postgres_dsn)
    ledger.claim("event-1")
    ledger.claim_pid("event-1", "a1b2c3d4e5")
    drop_connections(postgres_dsn)
    assert ledger.claim("event-1") == LedgerEntry("event-1", "a1b2c3d4e5", Step.PID_CLAIMED)
    ledger.close()


def test_a_claim_outlives_its_holders_lost_connection(postgres_dsn: str) -> None:
    """Unlike a lock of the session, which a dropped connection would let go of while the
    holder, reconnected, goes on with the event."""
    holder, other = PostgresLedger(postgres_dsn), PostgresLedger(postgres_dsn)
    holder.claim("event-1")
    drop_connections(postgres_dsn)
    with pytest.raises(ClaimedElsewhere):
        other.claim("event-1")
    assert holder.claim_pid("event-1", "a1b2c3d4e5") == "a1b2c3d4e5"  # reconnected, still its
    holder.release("event-1", Step.TRANSFER_REQUESTED)
    assert other.claim("event-1") == LedgerEntry("event-1", "a1b2c3d4e5", Step.TRANSFER_REQUESTED)
    holder.close()
    other.close()


def test_a_fractional_postgres_retention_keeps_younger_entries_and_prunes_older_ones(
    postgres_dsn: str,
) -> None:
    first = PostgresLedger(postgres_dsn)
    taken_in(first, "30-hours-old", "a1b2c3d4e5")
    taken_in(first, "40-hours-old", "z9y8x7w6v5")
    first.close()
    age(postgres_dsn, "30-hours-old", hours=30)
    age(postgres_dsn, "40-hours-old", hours=40)
    PostgresLedger(postgres_dsn, retention_days=1.5).close()
    assert recorded(postgres_dsn, "30-hours-old") is not None
    assert recorded(postgres_dsn, "40-hours-old") is None


def test_a_postgres_reconnect_does_not_prune(postgres_dsn: str) -> None:
    """Only the start prunes: an event still being retried must keep its PID."""
    ledger = PostgresLedger(postgres_dsn, retention_days=1)
    taken_in(ledger, "event-1", "a1b2c3d4e5")
    age(postgres_dsn, "event-1", hours=48)
    drop_connections(postgres_dsn)
    assert ledger.claim("event-1") == LedgerEntry("event-1", "a1b2c3d4e5", Step.PID_CLAIMED)
    ledger.close()


# --- a PostgreSQL ledger under faults: timeouts small enough for a test ---------------------

CONNECT_SECONDS = 2.0  # to connect, and to wait for a connection from the pool
STATEMENT_SECONDS = 1.0  # the server's statement_timeout; the answer's deadline is 1 s later
SLACK_SECONDS = 1.0  # for a busy machine
WORKERS = 4


@pytest.fixture
def relay(postgres_dsn: str) -> Iterator[Relay]:
    """A TCP relay in front of the test's PostgreSQL server, that a test can cut."""
    where = psycopg.conninfo.conninfo_to_dict(postgres_dsn)
    if where.get("host") not in (LOOPBACK, "localhost"):
        pytest.skip("the relay reaches servers on the loopback interface only")
    with Relay(int(where.get("port") or 5432)) as relay:
        yield relay


@pytest.fixture
def relayed_ledger(relay: Relay, postgres_dsn: str) -> Iterator[PostgresLedger]:
    """A ledger whose connections go through `relay`, with an event claimed already."""
    ledger = PostgresLedger(
        make_conninfo(postgres_dsn, host=LOOPBACK, port=relay.port),
        timeout=CONNECT_SECONDS,
        statement_timeout=STATEMENT_SECONDS,
        connections=WORKERS,
    )
    taken_in(ledger, "event-1", "a1b2c3d4e5")
    yield ledger
    relay.down()  # first, so that nothing still waiting on it outlives the test
    ledger.close()


def timed_claims(ledger: PostgresLedger) -> list[tuple[float, LedgerEntry | Exception | None]]:
    """`WORKERS` claims of the event side by side: how long each took, and what it got."""

    def claim(n: int) -> tuple[float, LedgerEntry | Exception | None]:
        started = time.monotonic()
        try:
            answer: LedgerEntry | Exception | None = ledger.claim("event-1")
        except ServiceUnavailable as error:
            answer = error
        return time.monotonic() - started, answer

    answers = side_by_side(claim, WORKERS, timeout=20)
    assert all(not isinstance(answer, Exception) for answer in answers), answers
    return [answer for answer in answers if not isinstance(answer, Exception)]


def seconds_until_it_answers(ledger: PostgresLedger, *, within: float) -> float:
    """Claim the event until the ledger answers, as the retries of an event would."""
    started = time.monotonic()
    while True:
        try:
            entry = ledger.claim("event-1")
        except ServiceUnavailable:
            assert time.monotonic() - started < within, f"no answer within {within} s"
            continue
        assert entry == LedgerEntry("event-1", "a1b2c3d4e5", Step.PID_CLAIMED)
        return time.monotonic() - started


@pytest.mark.parametrize("silent", [False, True], ids=["refusing", "silent"])
def test_a_postgres_database_out_of_reach_fails_every_worker_fast_until_it_is_back(
    relay: Relay, relayed_ledger: PostgresLedger, silent: bool
) -> None:
    """Refusing connections, or taking them and never answering (a host gone, a firewall
    dropping what is sent): each worker's statement fails within the wait for a
    connection, side by side rather than one after another; once the database is back,
    the next statement gets a new connection."""
    relay.down()  # the open connections cut
    if silent:
        relay.swallowing = True
        relay.up()
    claims = timed_claims(relayed_ledger)
    assert all(isinstance(answer, ServiceUnavailable) for _, answer in claims), claims
    assert max(seconds for seconds, _ in claims) < CONNECT_SECONDS + SLACK_SECONDS

    relay.down()  # and the connections it swallowed
    relay.swallowing = False
    relay.up()
    assert seconds_until_it_answers(relayed_ledger, within=CONNECT_SECONDS) < CONNECT_SECONDS


def test_a_postgres_connection_that_stops_answering_fails_within_the_statement_timeout(
    relay: Relay, relayed_ledger: PostgresLedger
) -> None:
    """A half-open link: the relay takes what is sent and forwards nothing, on the open
    connections and on new ones. No keepalive or server timeout sees it; the deadline on
    the answer does, for every worker at once."""
    relay.swallowing = True
    claims = timed_claims(relayed_ledger)
    assert all(isinstance(answer, ServiceUnavailable) for _, answer in claims), claims
    deadline = max(STATEMENT_SECONDS + 1, CONNECT_SECONDS)  # an answer, or a connection
    assert max(seconds for seconds, _ in claims) < deadline + SLACK_SECONDS
    assert any("no answer within 2 s" in str(answer) for _, answer in claims), claims

    relay.swallowing = False
    # A connection opened while the relay swallowed may wait out its connect timeout first.
    seconds_until_it_answers(relayed_ledger, within=2 * CONNECT_SECONDS)


def test_postgres_connections_are_one_per_worker_probed_when_idle_and_time_their_statements(
    postgres_dsn: str,
) -> None:
    """What bounds a connection besides the tests above: keepalives, which only show after
    minutes, so here as the socket options libpq set."""
    with_options = make_conninfo(postgres_dsn, options="-c lock_timeout=700")
    ledger = PostgresLedger(with_options, statement_timeout=1.5, connections=3)
    assert ledger._pool.max_size == 3
    with ledger._pool.connection() as db:
        assert db.execute("SHOW statement_timeout").fetchone() == ("1500ms",)
        assert db.execute("SHOW lock_timeout").fetchone() == ("700ms",)  # the DSN's, kept
        with socket.socket(fileno=os.dup(db.pgconn.socket)) as probe:
            assert probe.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert probe.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30
            assert probe.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 10
            assert probe.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
    ledger.close()


def test_a_statement_stuck_on_a_lock_is_cancelled_and_holds_up_no_other_worker(
    postgres_dsn: str,
) -> None:
    """The server's statement_timeout ends the wait; the other workers' statements go on
    meanwhile, on connections of their own."""
    ledger = PostgresLedger(postgres_dsn, statement_timeout=STATEMENT_SECONDS, connections=WORKERS)
    ledger.claim("locked")
    ledger.claim_pid("locked", "a1b2c3d4e5")
    ledger.claim("other")
    # Leaving the block closes the holder first, which lets whatever still waits go on.
    with ThreadPoolExecutor(max_workers=2) as workers, psycopg.connect(postgres_dsn) as holder:
        holder.execute("SELECT 1 FROM s3_events_ledger WHERE identity = 'locked' FOR UPDATE")
        locked = workers.submit(ledger.advance, "locked", Step.TRANSFER_REQUESTED)
        time.sleep(0.2)  # the advance now waits for the row's lock
        other = workers.submit(ledger.claim_pid, "other", "z9y8x7w6v5")
        assert other.result(timeout=0.5) == "z9y8x7w6v5"
        with pytest.raises(ServiceUnavailable, match="statement timeout"):
            locked.result(timeout=STATEMENT_SECONDS + SLACK_SECONDS)
    ledger.advance("locked", Step.TRANSFER_REQUESTED)  # the lock is gone: it goes through
    assert ledger.claim("locked") == LedgerEntry("locked", "a1b2c3d4e5", Step.TRANSFER_REQUESTED)
    ledger.close()


def age(dsn: str, identity: str, *, hours: float) -> None:
    """Make an entry look last touched `hours` ago."""
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(
            "UPDATE s3_events_ledger SET updated_at = now() - make_interval(secs => %s) "
            "WHERE identity = %s",
            (hours * 3600, identity),
        )


def drop_connections(dsn: str) -> None:
    """Kill every other session on the test database, as a server restart would."""
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


def test_a_sqlite_location_is_looked_at_without_creating_anything(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    assert "does not exist yet" in inspect_location(path)
    assert list(tmp_path.iterdir()) == []
    SqliteLedger(path).close()
    assert "is a SQLite database" in inspect_location(path)


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("no-such-folder/ledger.sqlite3", "does not exist"),
        ("not-a-database.txt", "is not a SQLite database"),
        ("a-folder", "is not a file"),
    ],
)
def test_a_sqlite_location_that_cannot_serve_says_why(tmp_path: Path, name: str, why: str) -> None:
    (tmp_path / "not-a-database.txt").write_text("hello")
    (tmp_path / "a-folder").mkdir()
    with pytest.raises(ValueError, match=why):
        inspect_location(tmp_path / name)


def test_a_postgres_ledger_is_looked_at_without_creating_its_table(postgres_dsn: str) -> None:
    assert "is not there yet" in inspect_database(postgres_dsn)
    assert "is not there yet" in inspect_database(postgres_dsn)  # still not created
    PostgresLedger(postgres_dsn).close()
    assert "has the table s3_events_ledger" in inspect_database(postgres_dsn)


def test_a_postgres_ledger_that_does_not_answer_is_unavailable_not_a_setting() -> None:
    with pytest.raises(ServiceUnavailable) as raised:
        inspect_database("postgresql://s3events:pw-not-to-show@127.0.0.1:1/s3events", timeout=2)
    assert "pw-not-to-show" not in str(raised.value)
    with pytest.raises(ValueError, match="cannot be parsed"):
        inspect_database("host=127.0.0.1 user=s3events pw-not-to-show")


def test_the_count_of_a_message_in_hand_outlives_the_consumer(open_ledger: Opener) -> None:
    """How the count goes is the contract's (tests/contracts/test_ledger.py); here, that it
    is kept on disk."""
    first = open_ledger()
    assert first.begin_delivery("digest-1") == 0
    first.close()  # the consumer died during the message: the count outlives it
    assert open_ledger().begin_delivery("digest-1") == 1  # one death before this delivery


def test_consumers_side_by_side_lose_no_count(open_ledger: Opener) -> None:
    ledgers = [open_ledger() for _ in range(4)]

    def begin(n: int) -> int:
        return ledgers[n % len(ledgers)].begin_delivery("digest-1")

    counts = side_by_side(begin, 8)
    assert sorted(count for count in counts if isinstance(count, int)) == list(range(8))

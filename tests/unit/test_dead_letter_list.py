"""`dead-letters list` on the stand-in broker: what it says when the queue is not what its
count said."""

from __future__ import annotations

import io

import pytest

from s3_events_handler.entrypoints.dead_letters import list_dead_letters
from tests.unit.fake_dead_letter_broker import (
    DLQ,
    INCOMING,
    Declared,
    FakeBroker,
    Method,
    numbered,
    queue_of,
)


class Overcounting(FakeBroker):
    """A queue whose count says one more than it then hands out: something else took one."""

    def queue_declare(self, queue: str, passive: bool) -> Declared:
        return Declared(Method(message_count=len(self.queues[queue]) + 1))


def test_a_queue_holding_fewer_than_its_count_is_listed_and_said(
    capsys: pytest.CaptureFixture[str],
) -> None:
    broker = Overcounting({DLQ: [], INCOMING: []})
    broker.queues[DLQ] = FakeBroker.holding(*numbered(3)).queues[DLQ]
    out = io.StringIO()

    assert list_dead_letters(queue_of(broker), out) == 0

    assert out.getvalue().splitlines()[-1] == f"3 dead letter(s) in {DLQ}, all left in place"
    assert "held fewer dead letters than when this began (4)" in capsys.readouterr().err
    assert broker.bodies() == [b"body-0", b"body-1", b"body-2"]

"""Loop helpers that need no broker: batching offsets and per-record error isolation."""

from datetime import datetime, timezone

from core.errors import Reason, RecordError
from core.kafka import Received, next_offsets, per_record


class FakeMessage:
    def __init__(self, topic, partition, offset):
        self._t, self._p, self._o = topic, partition, offset

    def topic(self):
        return self._t

    def partition(self):
        return self._p

    def offset(self):
        return self._o


def test_next_offsets_are_one_past_the_highest_per_partition():
    msgs = [FakeMessage("t", 0, 5), FakeMessage("t", 1, 7), FakeMessage("t", 0, 6), FakeMessage("u", 0, 1)]
    got = {(tp.topic, tp.partition): tp.offset for tp in next_offsets(msgs)}
    assert got == {("t", 0): 7, ("t", 1): 8, ("u", 0): 2}


def test_per_record_keeps_order_and_isolates_record_errors():
    def transform(received):
        if received.record["n"] == 2:
            raise RecordError(Reason.BAD_EVENT, "two is bad")
        return received.record["n"] * 10

    now = datetime.now(timezone.utc)
    out = per_record(transform)([Received({"n": n}, now) for n in (1, 2, 3)])
    assert out[0] == 10 and out[2] == 30
    assert isinstance(out[1], RecordError) and out[1].reason == Reason.BAD_EVENT

"""Hop timestamps: where a record's time goes between the photo and its prediction.

The stage loop (``core.kafka``) gives each output record the hop headers of its input and
one of its own, ``fruits-hop-<stage>``: when the stage received the input (poll), finished
its transform and produced the output (Unix microseconds, ASCII ``received,processed,produced``).
The first stage also records ``fruits-hop-source``: the Kafka timestamp of the record that
entered the pipeline (the photo event, as its producer stamped it). A prediction thus carries
the whole path, from which ``hop_seconds`` derives, per stage:

- ``wait``: from the previous stage producing the record (or the source) to this stage taking
  it: the upstream transaction's commit (read_committed), the fetch and the queue before it;
- ``process``: decode and transform (a batch's records share its transform time);
- ``produce``: encode and hand the output to the producer.

The clocks are the hosts' wall clocks: on one machine exact, across machines as good as
their time synchronisation. Other headers (a replay's ``fruits-replay-of``) are not carried
on; a replayed record starts its path at the stage it was replayed into.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

HEADER_PREFIX = "fruits-hop-"
SOURCE_HEADER = HEADER_PREFIX + "source"
PARTS = ("wait", "process", "produce")
"""The parts of each stage's hop, in order (``hop_seconds``)."""

Headers = Sequence[tuple[str, bytes | None]]


@dataclass(frozen=True)
class Hop:
    """One stage's times for one record, in Unix seconds."""

    stage: str
    received: float
    processed: float
    produced: float


def _micros(seconds: float) -> str:
    return str(round(seconds * 1_000_000))


def hop_header(hop: Hop) -> tuple[str, bytes]:
    value = ",".join(_micros(t) for t in (hop.received, hop.processed, hop.produced))
    return HEADER_PREFIX + hop.stage, value.encode()


def source_header(timestamp_ms: int) -> tuple[str, bytes]:
    """The header naming when the pipeline's input record was produced (its Kafka timestamp)."""
    return SOURCE_HEADER, str(timestamp_ms * 1000).encode()


def carried(headers: Headers | None, timestamp_ms: int) -> list[tuple[str, bytes]]:
    """The hop headers an input record passes on to its output: its own hop headers, or,
    if it has none (it entered the pipeline here), the source header from its Kafka timestamp
    (none if it has no timestamp: 0 or -1)."""
    hops = [(name, value) for name, value in headers or () if name.startswith(HEADER_PREFIX) and value is not None]
    if not hops and timestamp_ms > 0:
        return [source_header(timestamp_ms)]
    return hops


def parse(headers: Headers | None) -> tuple[float | None, list[Hop]]:
    """The source time (None if absent) and the hops of a record's headers, in path order.
    A malformed hop header is skipped: the timing of a record is never worth an error."""
    source: float | None = None
    hops: list[Hop] = []
    for name, value in headers or ():
        if not name.startswith(HEADER_PREFIX) or value is None:
            continue
        try:
            times = [int(part) / 1_000_000 for part in value.decode("ascii").split(",")]
        except (UnicodeDecodeError, ValueError):
            continue
        if name == SOURCE_HEADER and len(times) == 1:
            source = times[0]
        elif name != SOURCE_HEADER and len(times) == 3:
            hops.append(Hop(name[len(HEADER_PREFIX) :], *times))
    return source, hops


def hop_seconds(source: float | None, hops: Iterable[Hop]) -> dict[tuple[str, str], float]:
    """``(stage, part) → seconds`` of a record's path (parts: ``PARTS``). A stage's wait is
    known when the previous hop (or, for the first, the source) is."""
    seconds: dict[tuple[str, str], float] = {}
    previous = source
    for hop in hops:
        if previous is not None:
            seconds[hop.stage, "wait"] = hop.received - previous
        seconds[hop.stage, "process"] = hop.processed - hop.received
        seconds[hop.stage, "produce"] = hop.produced - hop.processed
        previous = hop.produced
    return seconds

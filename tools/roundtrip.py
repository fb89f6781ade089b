"""The round-trip harness of the demo, the benchmarks and the tests: send photos, collect
their predictions, and count what came back (latency, missing, duplicated)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from core import hops
from core.kafka import poll_batch
from core.records import Prediction, decode_record
from core.settings import Settings
from tools.client import PhotoSender, PredictionReader


@dataclass
class RoundTrip:
    """Photos sent and the predictions that came back, with wall-clock times."""

    sent_at: dict[str, float] = field(default_factory=dict)
    predictions: dict[str, list[Prediction]] = field(default_factory=dict)
    received_at: dict[str, float] = field(default_factory=dict)
    hops: dict[str, tuple[list[tuple[str, bytes]], float]] = field(default_factory=dict)
    """Per photo, its first prediction's headers (``core.hops``) and when it was read (Unix time)."""
    send_seconds: float = 0.0
    total_seconds: float = 0.0

    def latencies(self) -> list[float]:
        return sorted(self.received_at[p] - self.sent_at[p] for p in self.received_at)

    def startup_seconds(self) -> float | None:
        """Time to the first prediction: from the first photo sent to the first prediction read
        (the services' lazy start: models loaded, connections opened); None if none came."""
        if not self.received_at:
            return None
        return min(self.received_at.values()) - min(self.sent_at.values())

    def steady_photos(self) -> set[str]:
        """The answered photos sent once the first prediction was read: the start-up (the
        services' and this client's connections, models) is behind them."""
        if not self.received_at:
            return set()
        warm = min(self.received_at.values())
        return {p for p in self.received_at if self.sent_at[p] >= warm}

    def steady_latencies(self) -> list[float]:
        """The latencies of the photos sent once the first prediction was read: without the start-up."""
        return sorted(self.received_at[p] - self.sent_at[p] for p in self.steady_photos())

    def duplicates(self) -> int:
        return sum(len(found) - 1 for found in self.predictions.values() if len(found) > 1)

    def missing(self) -> list[str]:
        return [photo_id for photo_id in self.sent_at if photo_id not in self.predictions]

    def hop_seconds(self, steady: bool = False) -> dict[tuple[str, str], list[float]]:
        """``(stage, part) → sorted seconds`` over the predictions (``core.hops.hop_seconds``),
        plus ``("client", "wait")``: from predict producing the prediction to its reading here.
        ``steady``: over the ``steady_photos`` only."""
        found: dict[tuple[str, str], list[float]] = {}
        photos = self.steady_photos() if steady else self.hops.keys()
        for headers, read_at in (self.hops[p] for p in photos if p in self.hops):
            source, path = hops.parse(headers)
            seconds = hops.hop_seconds(source, path)
            if path:
                seconds["client", "wait"] = read_at - path[-1].produced
            for key, value in seconds.items():
                found.setdefault(key, []).append(value)
        return {key: sorted(values) for key, values in found.items()}


class SendingThread(threading.Thread):
    """Sends the photos (at ``rate`` per second, or as fast as possible) beside the reader;
    an exception is kept in ``error`` for the caller's thread."""

    def __init__(
        self,
        sender: PhotoSender,
        payloads: list[tuple[str, str, bytes]],
        result: RoundTrip,
        rate: float | None,
        on_sent: Callable[[int], None] | None,
    ) -> None:
        super().__init__(name="photo-sender")
        self.sender, self.payloads, self.result, self.rate, self.on_sent = sender, payloads, result, rate, on_sent
        self.started_at = time.monotonic()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for index, (photo_id, name, data) in enumerate(self.payloads):
                if self.rate:
                    time.sleep(max(0.0, self.started_at + index / self.rate - time.monotonic()))
                self.result.sent_at[photo_id] = time.monotonic()
                self.sender.send_bytes(data, photo_id, name)
                if self.on_sent is not None:
                    self.on_sent(index + 1)
            self.sender.flush()
            self.result.send_seconds = time.monotonic() - self.started_at
        except BaseException as exc:  # re-raised in the caller's thread
            self.error = exc


def collect(
    reader: PredictionReader, result: RoundTrip, expected: set[str], timeout: float, linger: float, bar: tqdm
) -> None:
    """Read predictions of ``expected`` photos into ``result`` until all arrived and
    ``linger`` seconds passed without another (duplicates would show up then), or
    ``timeout`` seconds passed without any."""
    while True:
        complete = len(result.received_at) == len(expected)
        batch = poll_batch(reader.consumer, 500, linger if complete else timeout)
        if not batch:
            return
        now = time.monotonic()
        for msg in batch:
            if msg.error() is not None:
                continue
            prediction = decode_record(Prediction, msg.value())
            photo_id = prediction.photo.photo_id
            if photo_id not in expected:
                continue
            if photo_id not in result.predictions:
                bar.update(1)
                result.received_at[photo_id] = now
                result.hops[photo_id] = (msg.headers() or [], time.time())
            result.predictions.setdefault(photo_id, []).append(prediction)


def round_trip(
    settings: Settings,
    photos: Sequence[tuple[str, Path]],
    rate: float | None = None,
    timeout: float = 120.0,
    progress: str | None = None,
    on_sent: Callable[[int], None] | None = None,
    linger: float = 1.0,
    sender: PhotoSender | None = None,
) -> RoundTrip:
    """Send ``(photo_id, path)`` photos (at ``rate`` per second, or as fast as
    possible) and collect their predictions until all arrived or ``timeout`` seconds
    pass without one, then ``linger`` seconds more to catch duplicates; ``on_sent(n)``
    is called after the n-th photo is sent. Photos are read into memory first so that
    disk speed does not pace the sending.

    ``sender``: a producer kept across round trips, as a long-lived client (the gateway)
    keeps its own; by default a new one. A new idempotent producer may hold its first photos
    for up to half a second (librdkafka asks for its producer id before the connection is up,
    and asks again 500 ms later), and the backlog that builds meanwhile delays the photos
    sent after it too: a measurement of the pipeline's steady latency reuses a warm sender."""
    payloads = [(photo_id, path.name, path.read_bytes()) for photo_id, path in photos]
    reader = PredictionReader(settings)
    result = RoundTrip()
    sending = SendingThread(sender or PhotoSender(settings), payloads, result, rate, on_sent)
    sending.start()
    with tqdm(total=len(payloads), desc=progress, unit="photo", disable=progress is None) as bar:
        try:
            collect(reader, result, {photo_id for photo_id, _ in photos}, timeout, linger, bar)
        finally:
            sending.join()
            reader.close()
    if sending.error is not None:
        raise sending.error
    result.total_seconds = time.monotonic() - sending.started_at
    return result

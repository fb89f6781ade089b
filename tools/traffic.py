"""Steady photo traffic with an exactly-once ledger: the fault tests, `make faults` and
`make soak` send photos at a steady rate while they break things, and check afterwards that
every valid photo got exactly one prediction and every invalid one exactly one dead letter.

``Traffic`` sends photos (every ``invalid_every``-th one cut in half, which ingest must
dead-letter as ``undecodable_image``) from a thread of its own, and reads every prediction
(as the client) and every dead letter (as the operator: dead letters are the admin's alone)
from another, noting when each answer came. ``tally`` then counts what was lost, duplicated or
answered the wrong way.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from core.errors import Reason
from core.kafka import poll_batch
from core.records import DeadLetter, PhotoEvent, decode_record, encode_record
from core.settings import Settings
from tools.client import PhotoSender, PredictionReader, new_photo_id

PREDICTION = "prediction"
"""The answer a valid photo expects; an invalid one expects a dead letter's reason."""
INVALID_REASON = Reason.UNDECODABLE_IMAGE.value
"""The dead letter a photo cut in half gets from ingest."""


@dataclass(frozen=True)
class Tally:
    """What came back for a set of photos."""

    sent: int
    lost: list[str]
    """Photos without any answer."""
    duplicated: int
    """Answers beyond each photo's first."""
    wrong: dict[str, list[str]]
    """Photos answered otherwise than expected (a valid photo dead-lettered, …): their answers."""
    latencies: list[float]
    """Seconds from sending to the first answer, sorted."""

    @property
    def exactly_once(self) -> bool:
        return not self.lost and not self.duplicated and not self.wrong

    def summary(self) -> str:
        return (
            f"{self.sent} photos: {len(self.lost)} lost, {self.duplicated} duplicated, "
            f"{len(self.wrong)} answered wrongly"
        )


class Traffic:
    """Photos sent at ``rate`` per second (``photos`` over and over, each time with a new id)
    until ``stop_sending`` or ``count`` were sent, and every answer read back; a context manager
    (it starts on entering, and stops and closes its clients on leaving)."""

    def __init__(
        self,
        client: Settings,
        operator: Settings,
        photos: Sequence[Path],
        rate: float,
        count: int | None = None,
        invalid_every: int = 0,
    ) -> None:
        self.rate = rate
        self.count = count
        self.invalid_every = invalid_every
        self.payloads = [(path.name, path.read_bytes()) for path in photos]  # disk speed must not pace sending
        self.sender = PhotoSender(client)
        self.readers = (PredictionReader(client), PredictionReader(operator, topic=operator.topic_dead_letter))
        self.expected: dict[str, str] = {}
        """Photo id → the answer it should get: PREDICTION or a dead letter's reason."""
        self.sent_at: dict[str, float] = {}
        self.answers: dict[str, list[tuple[str, float]]] = {}
        """Photo id → each answer that came (PREDICTION or a dead letter's reason) and when (monotonic)."""
        self.errors: list[BaseException] = []
        self._stop_sending = threading.Event()
        self._stop_reading = threading.Event()
        self._threads = [
            threading.Thread(target=self._guarded, args=(self._send,), name="traffic-sender", daemon=True),
            threading.Thread(target=self._guarded, args=(self._read,), name="traffic-reader", daemon=True),
        ]

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop_sending.set()
        self._stop_reading.set()
        for thread in self._threads:
            thread.join()
        for reader in self.readers:
            reader.close()

    # --- Sending ------------------------------------------------------------------------------

    def expect(self, photo_id: str, answer: str) -> None:
        """Note a photo as sent now, and the answer it should get (also for one a test sent itself)."""
        self.expected[photo_id] = answer
        self.sent_at[photo_id] = time.monotonic()

    def stop_sending(self) -> None:
        """Send no more photos (those queued are still delivered)."""
        self._stop_sending.set()
        self._threads[0].join()

    @property
    def sending(self) -> bool:
        return self._threads[0].is_alive()

    def _send(self) -> None:
        started = time.monotonic()
        for index, (name, data) in enumerate(itertools.cycle(self.payloads)):
            if self.count is not None and index >= self.count:
                break
            if self._stop_sending.wait(max(0.0, started + index / self.rate - time.monotonic())):
                break
            photo_id = new_photo_id()
            if self.invalid_every and index % self.invalid_every == self.invalid_every - 1:
                self.expect(photo_id, INVALID_REASON)
                # As another producer could send it: our own client refuses a photo it cannot read.
                event = PhotoEvent(photo_id=photo_id, user_id="traffic", captured_at=datetime.now(timezone.utc),
                                   region=self.sender.region, content_type=None, image=data[: len(data) // 2],
                                   image_uri=None)  # fmt: skip
                self.sender.send_raw(photo_id, encode_record(event))
            else:
                self.expect(photo_id, PREDICTION)
                self.sender.send_bytes(data, photo_id, name)
        # Through a broker outage queued photos wait: librdkafka delivers them once it is back.
        self.sender.flush(timeout=300)

    # --- Reading ------------------------------------------------------------------------------

    def _read(self) -> None:
        predictions = self.readers[0]
        while not self._stop_reading.is_set():
            for reader in self.readers:
                batch = poll_batch(reader.consumer, 500, 0.1)
                now = time.monotonic()
                for msg in batch:
                    if msg.error() is not None or msg.key() is None:
                        continue
                    if reader is predictions:
                        answer = PREDICTION
                    else:
                        answer = decode_record(DeadLetter, msg.value()).error_class
                    self.answers.setdefault(msg.key().decode(errors="replace"), []).append((answer, now))

    def _guarded(self, work: Callable[[], None]) -> None:
        try:
            work()
        except BaseException as exc:  # re-raised by check() in the caller's thread
            self.errors.append(exc)

    def check(self) -> None:
        """Raise what failed in the sending or reading thread."""
        if self.errors:
            raise self.errors[0]

    # --- Counting -----------------------------------------------------------------------------

    def unanswered(self, photo_ids: Collection[str] | None = None) -> list[str]:
        ids = list(self.expected) if photo_ids is None else photo_ids
        return [photo_id for photo_id in ids if photo_id not in self.answers]

    def wait_answered(self, timeout: float, linger: float = 3.0, photo_ids: Collection[str] | None = None) -> bool:
        """Wait until every photo of ``photo_ids`` has an answer (by default: until sending ended
        and every photo sent has), then ``linger`` seconds more (a duplicate would come right
        behind); False after ``timeout``."""
        deadline = time.monotonic() + timeout
        while (photo_ids is None and self.sending) or self.unanswered(photo_ids):
            self.check()
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        time.sleep(linger)
        self.check()
        return True

    def first_prediction_after(self, moment: float) -> float | None:
        """When the first prediction to come after ``moment`` (monotonic) came, if one did."""
        answers = [answer for found in list(self.answers.values()) for answer in found]
        return min((at for answer, at in answers if answer == PREDICTION and at >= moment), default=None)

    def answered_at(self, photo_id: str) -> float | None:
        """When the photo's first answer came, if it did."""
        found = self.answers.get(photo_id)
        return found[0][1] if found else None

    def tally(self, photo_ids: Collection[str] | None = None) -> Tally:
        """Lost, duplicated and wrong answers among the photos sent (or ``photo_ids``)."""
        ids = list(self.expected) if photo_ids is None else list(photo_ids)
        lost, duplicated, wrong, latencies = [], 0, {}, []
        for photo_id in ids:
            answers = self.answers.get(photo_id, [])
            if not answers:
                lost.append(photo_id)
                continue
            duplicated += len(answers) - 1
            if any(answer != self.expected[photo_id] for answer, _ in answers):
                wrong[photo_id] = [answer for answer, _ in answers]
            latencies.append(answers[0][1] - self.sent_at[photo_id])
        return Tally(len(ids), lost, duplicated, wrong, sorted(latencies))

"""`fruits dead-letters list|replay`: look at the dead-letter topic, and send records rejected
by a bug or an outage through again once the cause is fixed.

A replay produces each chosen dead letter's original record (its key and value) back to the
topic the stage read it from (``source_topic``), with a header naming the dead letter
(``fruits-replay-of: <dead-letter topic>[partition]@offset``); the stage takes it like any
other record. A replay duplicates nothing that succeeded, so it can be run again safely:

- a dead letter already replayed (a record with its header is on its source topic) is skipped;
- so is one whose photo got its prediction since it was rejected (same user and photo id on
  the predictions topic): it went through another way.

Both are found by reading the topics from the earliest chosen dead letter's time onwards.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, Message, Producer, TopicPartition

from core.errors import Reason, RecordError
from core.kafka import consumer_config, poll_batch, producer_config
from core.records import (
    DeadLetter,
    IngestedPhoto,
    PhotoEvent,
    PhotoFeatures,
    Prediction,
    PreprocessedPhoto,
    Record,
    ReducedFeatures,
    decode_record,
)
from core.settings import Settings

REPLAY_HEADER = "fruits-replay-of"
"""Header of a replayed record: the position of the dead letter it replays."""


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """``2026-11-26T10:00`` (UTC unless it says otherwise), ``2026-11-26``, or a time ago:
    ``30m``, ``2h``, ``7d``."""
    now = now or datetime.now(timezone.utc)
    if match := re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip()):
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match[2]]
        return now - timedelta(**{unit: float(match[1])})
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"not a time: {text!r} (ISO 8601 like 2026-11-26T10:00, or ago like 30m, 2h, 7d)") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class Selection:
    """Which dead letters: by reason, stage and time of failure (empty = any)."""

    reasons: frozenset[str] = frozenset()
    stages: frozenset[str] = frozenset()
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        for reason in self.reasons:
            Reason(reason)  # a typo is an error, not an empty selection

    def matches(self, letter: DeadLetter) -> bool:
        return (
            (not self.reasons or letter.error_class in self.reasons)
            and (not self.stages or letter.stage in self.stages)
            and (self.since is None or letter.failed_at >= self.since)
            and (self.until is None or letter.failed_at < self.until)
        )


@dataclass(frozen=True)
class Found:
    """A dead letter and where it is on the dead-letter topic."""

    position: str
    letter: DeadLetter


def record_types(settings: Settings) -> dict[str, type[Record]]:
    """The record type each stage reads, by its input topic."""
    return {
        settings.topic_photos: PhotoEvent,
        settings.topic_ingested: IngestedPhoto,
        settings.topic_preprocessed: PreprocessedPhoto,
        settings.topic_features: PhotoFeatures,
        settings.topic_reduced: ReducedFeatures,
    }


def photo_of(letter: DeadLetter, types: dict[str, type[Record]]) -> tuple[str, str] | None:
    """(user id, photo id) of the letter's original record, if it decodes."""
    record_type = types.get(letter.source_topic)
    if record_type is None or letter.original_value is None:
        return None
    try:
        record: Any = decode_record(record_type, letter.original_value)
    except RecordError:
        return None
    ref = record if isinstance(record, PhotoEvent) else record.photo
    return ref.user_id, ref.photo_id


def where(msg: Message) -> str:
    return f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"


def read_topic(settings: Settings, topic: str, since: datetime | None = None) -> Iterator[Message]:
    """The committed records of every partition of ``topic`` whose Kafka timestamp is at or
    after ``since`` (all if None), up to the end each partition has when reached."""
    consumer = Consumer(
        consumer_config(
            settings, group_id=f"fruits-dead-letters-{uuid.uuid4().hex[:8]}", **{"enable.partition.eof": True}
        )
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        if metadata.error is not None:
            raise RuntimeError(f"topic {topic}: {metadata.error}")
        start = OFFSET_BEGINNING if since is None else round(since.timestamp() * 1000)
        partitions = [TopicPartition(topic, p, start) for p in metadata.partitions]
        if since is not None:  # the first offset at or after that time, or the end
            partitions = [
                TopicPartition(topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END)
                for tp in consumer.offsets_for_times(partitions, timeout=10)
            ]
        consumer.assign(partitions)
        pending = {tp.partition for tp in partitions}
        while pending:
            for msg in poll_batch(consumer, 500, 1.0):
                error = msg.error()
                if error is None:
                    yield msg
                elif error.code() == KafkaError._PARTITION_EOF:
                    pending.discard(msg.partition())
                else:
                    raise RuntimeError(f"reading {topic}: {error}")
    finally:
        consumer.close()


def dead_letters(settings: Settings, selection: Selection) -> list[Found]:
    """The dead letters the selection chooses, oldest partition offsets first."""
    found = []
    for msg in read_topic(settings, settings.topic_dead_letter, selection.since):
        try:
            letter = decode_record(DeadLetter, msg.value())
        except RecordError:
            continue  # not a dead letter of ours
        if selection.matches(letter):
            found.append(Found(where(msg), letter))
    return found


@dataclass
class ReplayReport:
    replayed: list[Found] = field(default_factory=list)
    already_replayed: list[Found] = field(default_factory=list)
    already_predicted: list[Found] = field(default_factory=list)
    not_replayable: list[Found] = field(default_factory=list)
    """No original value, or from a topic no stage reads."""


def plan_replay(
    letters: Iterable[Found],
    replayed_positions: set[str],
    predicted: set[tuple[str, str]],
    types: dict[str, type[Record]],
) -> ReplayReport:
    """Sort the letters into those to replay and those to skip, and why."""
    report = ReplayReport()
    for found in letters:
        letter = found.letter
        if letter.original_value is None or letter.source_topic not in types:
            report.not_replayable.append(found)
        elif found.position in replayed_positions:
            report.already_replayed.append(found)
        elif photo_of(letter, types) in predicted:
            report.already_predicted.append(found)
        else:
            report.replayed.append(found)
    return report


def replay(settings: Settings, selection: Selection, dry_run: bool = False) -> ReplayReport:
    """Replay the chosen dead letters that neither were replayed nor went through since."""
    letters = dead_letters(settings, selection)
    types = record_types(settings)
    if not letters:
        return ReplayReport()
    earliest = min(found.letter.failed_at for found in letters)
    replayed_positions = {
        value.decode()
        for topic in sorted({found.letter.source_topic for found in letters} & types.keys())
        for msg in read_topic(settings, topic, earliest)
        for name, value in (msg.headers() or [])
        if name == REPLAY_HEADER and value is not None
    }
    predicted = {
        (prediction.photo.user_id, prediction.photo.photo_id)
        for msg in read_topic(settings, settings.topic_predictions, earliest)
        for prediction in [decode_record(Prediction, msg.value())]
    }
    report = plan_replay(letters, replayed_positions, predicted, types)
    if dry_run or not report.replayed:
        return report
    failures: list[str] = []
    producer = Producer(producer_config(settings, **{"enable.idempotence": True, "acks": "all"}))

    def delivered(error: Any, msg: Any) -> None:
        if error is not None:
            failures.append(f"{msg.topic()}: {error}")

    for found in report.replayed:
        letter = found.letter
        while True:
            try:
                producer.produce(
                    letter.source_topic,
                    key=letter.original_key,
                    value=letter.original_value,
                    headers=[(REPLAY_HEADER, found.position.encode())],
                    on_delivery=delivered,
                )
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(60)
    if remaining or failures:
        raise RuntimeError(f"{remaining} replays unacknowledged, {len(failures)} failed: {'; '.join(failures[:5])}")
    return report


def letter_line(found: Found) -> str:
    letter = found.letter
    source = f"{letter.source_topic}[{letter.source_partition}]@{letter.source_offset}"
    failed = letter.failed_at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{failed}  {letter.stage:<10} {letter.error_class:<22} {letter.photo_id or '-'}  {source}  {letter.error_message}"


def summary(letters: Iterable[Found]) -> str:
    counts = Counter((found.letter.stage, found.letter.error_class) for found in letters)
    return ", ".join(f"{stage}/{reason}: {n}" for (stage, reason), n in sorted(counts.items())) or "none"

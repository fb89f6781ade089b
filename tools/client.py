"""The user side of Fruits!: sending photo events and reading predictions."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from core.kafka import consumer_config, poll_batch, producer_config
from core.photos import new_photo_id, photo_event, without_location
from core.records import Prediction, decode_record, encode_record
from core.s3 import s3_client
from core.settings import Settings

READER_GROUP_PREFIX = "fruits-reader-"
"""Group ids of PredictionReader (a random suffix each; it never commits): ACLs name the prefix."""


class PhotoSender:
    """Produces PhotoEvents (key = photo_id); photos over the inline limit are uploaded
    to the region's bucket first and sent as an s3:// reference."""

    def __init__(self, settings: Settings, region: str = "eu", user_id: str = "cli-user") -> None:
        if region not in settings.region_buckets:
            raise ValueError(f"unknown region {region!r}; configured: {', '.join(sorted(settings.region_buckets))}")
        self.settings = settings
        self.region = region
        self.user_id = user_id
        self.producer = Producer(producer_config(settings, **{"enable.idempotence": True, "acks": "all"}))
        self.failures: list[str] = []
        self._s3: Any = None

    def send_bytes(self, data: bytes, photo_id: str | None = None, name: str = "") -> str:
        """Send a photo, without its location metadata (``without_location``)."""
        photo_id = photo_id or new_photo_id()
        data, content_type = without_location(data)
        if self._s3 is None and len(data) > self.settings.max_inline_image_bytes:
            self._s3 = s3_client(self.settings)
        event = photo_event(self.settings, self._s3, photo_id, self.user_id, self.region, data, content_type, name)
        self.send_raw(photo_id, encode_record(event))
        return photo_id

    def send_raw(self, photo_id: str, value: bytes) -> None:
        """Produce an already encoded value (tests use it to send foreign records)."""
        while True:
            try:
                self.producer.produce(
                    self.settings.topic_photos, key=photo_id.encode(), value=value, on_delivery=self._delivered
                )
                break
            except BufferError:  # local queue full: let deliveries drain
                self.producer.poll(0.1)
        self.producer.poll(0)

    def send_file(self, path: Path, photo_id: str | None = None) -> str:
        return self.send_bytes(path.read_bytes(), photo_id, path.name)

    def _delivered(self, error: Any, msg: Any) -> None:
        if error is not None:
            self.failures.append(f"{msg.key()!r}: {error}")

    def flush(self, timeout: float = 60.0) -> None:
        """Wait for every photo to be acknowledged; raise if any was not."""
        remaining = self.producer.flush(timeout)
        if remaining or self.failures:
            raise RuntimeError(
                f"{remaining} photos unacknowledged after {timeout:.0f} s, {len(self.failures)} failed: "
                + "; ".join(self.failures[:5])
            )


class PredictionReader:
    """Reads committed predictions from every partition, from the current end (new
    predictions only) or from the beginning; never commits offsets."""

    def __init__(self, settings: Settings, from_beginning: bool = False, topic: str | None = None) -> None:
        self.topic = topic or settings.topic_predictions
        self.consumer = Consumer(consumer_config(settings, group_id=f"{READER_GROUP_PREFIX}{uuid.uuid4().hex[:8]}"))
        try:
            metadata = self.consumer.list_topics(self.topic, timeout=10)
        except KafkaException as exc:
            raise ConnectionError(f"cannot reach Kafka at {settings.kafka_bootstrap_servers}: {exc}") from exc
        topic_metadata = metadata.topics[self.topic]
        if topic_metadata.error is not None:
            raise RuntimeError(f"topic {self.topic}: {topic_metadata.error}")
        partitions = []
        for partition in topic_metadata.partitions:
            tp = TopicPartition(self.topic, partition)
            if from_beginning:
                tp.offset = OFFSET_BEGINNING
            else:
                tp.offset = self.consumer.get_watermark_offsets(tp, timeout=10)[1]
            partitions.append(tp)
        self.consumer.assign(partitions)

    def messages(self, timeout: float) -> Iterator[Any]:
        """Messages until ``timeout`` seconds pass without one."""
        while True:
            batch = poll_batch(self.consumer, 500, timeout)
            if not batch:
                return
            for msg in batch:
                if msg.error() is None:
                    yield msg

    def predictions(self, timeout: float) -> Iterator[Prediction]:
        for msg in self.messages(timeout):
            yield decode_record(Prediction, msg.value())

    def close(self) -> None:
        self.consumer.close()

"""Predictions reach the gateway from the predictions topic. Every replica reads every
partition (manual assignment, a group id of its own, no committed offsets), so whichever
replica a user's request reaches learns of every prediction: each stores the predictions of
the gateway's photos in the store (the same row again, idempotent, when replicas share it)
and wakes the event streams it serves. On start a replica reads from its store's oldest
pending photo (bounded by FRUITS_GATEWAY_PREDICTIONS_LOOKBACK_HOURS), so a prediction that
arrived while it was down is not missed; with nothing pending, from the end."""

from __future__ import annotations

import dataclasses
import logging
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, KafkaException, TopicPartition

from core.errors import RecordError
from core.kafka import Backoff, consumer_config, poll_batch, where
from core.records import Prediction, decode_record
from core.settings import Settings
from services.gateway.store import Store

log = logging.getLogger(__name__)

GATEWAY_GROUP_PREFIX = "fruits-gateway-"
"""Group ids of the gateway's prediction readers (one per replica and start; never committed): ACLs name the prefix."""


def gateway_group_id() -> str:
    return f"{GATEWAY_GROUP_PREFIX}{uuid.uuid4().hex[:8]}"


def prediction_view(prediction: Prediction) -> dict[str, Any]:
    """A prediction as the API shows it (``API.md``: the photo object's ``prediction``)."""
    scored = lambda labels: [{"label": s.label, "confidence": s.confidence} for s in labels]  # noqa: E731
    return {
        "label": prediction.label,
        "confidence": prediction.confidence,
        "fruit_type": prediction.fruit_type,
        "type_confidence": prediction.type_confidence,
        "unsure": prediction.unsure,
        "top5_types": scored(prediction.top5_types),
        "top5": scored(prediction.top5),
        "fruit": dataclasses.asdict(prediction.fruit) if prediction.fruit else None,
        "model_versions": dataclasses.asdict(prediction.model_versions),
        "predicted_at": prediction.predicted_at.isoformat(),
    }


def start_offsets(
    consumer: Consumer, topic: str, since: datetime | None, timeout: float = 10.0
) -> list[TopicPartition]:
    """Every partition of ``topic``, at the first offset at or after ``since`` (None: the end)."""
    metadata = consumer.list_topics(topic, timeout=timeout).topics[topic]
    if metadata.error is not None:
        raise ConnectionError(f"topic {topic}: {metadata.error}")
    if since is None:
        return [TopicPartition(topic, p, OFFSET_END) for p in metadata.partitions]
    millis = int(since.timestamp() * 1000)
    # A partition with no record at or after the time comes back at OFFSET_END (-1).
    return consumer.offsets_for_times([TopicPartition(topic, p, millis) for p in metadata.partitions], timeout)


class PredictionFollower:
    """A thread reading the predictions topic into the store; ``on_stored`` gets the ids of
    the gateway's photos whose prediction was just stored (to wake their event streams)."""

    def __init__(self, settings: Settings, store: Store, on_stored: Callable[[list[str]], None]) -> None:
        self.settings, self.store, self.on_stored = settings, store, on_stored
        self.ready = threading.Event()
        """Set once the partitions are assigned: from then on no prediction is missed."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prediction-follower", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            self._follow()
        except BaseException as exc:  # the health check reports it; the process is restarted
            self.error = exc
            log.exception("predictions: the reader stopped")

    def _since(self) -> datetime | None:
        oldest = self.store.oldest_pending()
        if oldest is None:
            return None
        lookback = timedelta(hours=self.settings.gateway_predictions_lookback_hours)
        return max(oldest, datetime.now(timezone.utc) - lookback)

    def _store(self, found: list[tuple[str, dict[str, Any], str]], backoff: Backoff) -> list[str]:
        """Store a batch, waiting out a database outage (the batch is kept, never skipped)."""
        while found and not self._stop.is_set():
            try:
                stored = self.store.record_predictions(found)
            except Exception as exc:  # SQLAlchemy's errors of a database that is away, or locked
                delay = backoff.next_delay()
                log.warning("predictions: cannot store %d predictions (%s); again in %.1f s", len(found), exc, delay)
                self._stop.wait(delay)
                continue
            backoff.reset()
            return stored
        return []

    def _follow(self) -> None:
        topic = self.settings.topic_predictions
        consumer = Consumer(consumer_config(self.settings, group_id=gateway_group_id()))
        try:
            since = self._since()
            consumer.assign(start_offsets(consumer, topic, since))
            self.ready.set()
            log.info("predictions: reading %s from %s", topic, since.isoformat() if since else "its end")
            backoff = Backoff(self.settings.retry_backoff_initial_seconds, self.settings.retry_backoff_max_seconds)
            while not self._stop.is_set():
                found = []
                for msg in poll_batch(consumer, 500, self.settings.poll_timeout_seconds):
                    if msg.error() is not None:
                        log.warning("predictions: %s", msg.error())
                        continue
                    try:
                        prediction = decode_record(Prediction, msg.value())
                    except RecordError as exc:  # not ours to dead-letter: the topic's writer is predict
                        log.warning("predictions: %s skipped: %s", where(msg), exc)
                        continue
                    photo = prediction.photo
                    found.append((photo.photo_id, prediction_view(prediction), photo.original_uri))
                if stored := self._store(found, backoff):
                    self.on_stored(stored)
        except KafkaException as exc:
            raise ConnectionError(f"predictions: {exc}") from exc
        finally:
            consumer.close()

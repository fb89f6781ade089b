"""The gateway's Kafka producer: idempotent (acks=all), shared by every request; a thread
serves its delivery reports, and a request awaits its own record's acknowledgement, so that
202 means the broker has the photo event (and a failure is answered 503, not lost)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from confluent_kafka import KafkaError, Producer

from core.kafka import producer_config
from core.settings import Settings

DELIVERY_TIMEOUT_MS = 30_000
"""How long the producer retries a record before reporting it failed (the request then gets 503)."""


class NotDelivered(RuntimeError):
    """The broker did not acknowledge a record (or the producer's queue is full)."""


class EventProducer:
    def __init__(self, settings: Settings) -> None:
        self.producer = Producer(
            producer_config(
                settings, **{"enable.idempotence": True, "acks": "all", "delivery.timeout.ms": DELIVERY_TIMEOUT_MS}
            )
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="producer-deliveries", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.1)

    async def send(self, topic: str, key: bytes, value: bytes) -> None:
        """Produce and wait for the broker's acknowledgement; raises NotDelivered."""
        loop = asyncio.get_running_loop()
        delivered: asyncio.Future[None] = loop.create_future()

        def report(error: KafkaError | None, _: Any) -> None:
            loop.call_soon_threadsafe(_settle, delivered, error)

        try:
            self.producer.produce(topic, key=key, value=value, on_delivery=report)
        except BufferError as exc:  # the local queue is full: backpressure, not a wait
            raise NotDelivered(f"producer queue full ({exc})") from exc
        await delivered

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued, then stop."""
        self.producer.flush(timeout)
        self._stop.set()
        self._thread.join(timeout)


def _settle(future: asyncio.Future[None], error: KafkaError | None) -> None:
    if future.done():  # the request was cancelled (the client left)
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(NotDelivered(error.str()))

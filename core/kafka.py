"""Kafka plumbing: client configuration and the exactly-once stage loop.

Every service is a ``Stage``: it reads one input topic, turns each record into one
output record (or a ``RecordError``), and the loop here does the rest, following
confluent-kafka-python's exactly-once example: a transactional producer, a
read_committed consumer without auto-commit, and per batch
``begin → produce outputs and dead letters → send_offsets_to_transaction → commit``.
On an abortable error the batch is aborted and the consumer rewound to the last
committed offsets, so nothing is lost or duplicated.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Generic, TypeVar

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from core import metrics
from core.errors import RecordError, map_valid
from core.limits import DEAD_LETTER_MESSAGE_CHARS, check_size_limits, size_limits
from core.records import DeadLetter, Record, decode_record, encode_record, photo_id_of
from core.settings import Settings

log = logging.getLogger(__name__)
In = TypeVar("In", bound=Record)
Out = TypeVar("Out", bound=Record)

READY_MESSAGE = "%s: Kafka reachable, starting"
"""Logged once a service has reached Kafka (and serves /metrics if enabled): its readiness signal."""

LIBRDKAFKA_LOGGER = logging.getLogger("librdkafka")
"""librdkafka's own log lines go through Python logging (served by poll), not raw to stderr."""


@dataclass(frozen=True)
class Received(Generic[In]):
    """A decoded input record, its Kafka timestamp and where it was read."""

    record: In
    timestamp: datetime
    source: str = ""
    """``topic[partition]@offset``: the same for a record read again after a crash or abort."""


@dataclass
class Stage(Generic[In, Out]):
    """A consume-transform-produce step: ``transform`` maps a batch of decoded input
    records to outcomes (the output record, or the RecordError that rejects the input),
    one per record and in order, so it can batch (featurize does)."""

    name: str
    input_topic: str
    input_type: type[In]
    output_topic: str
    transform: Callable[[list[Received[In]]], Sequence[Out | RecordError]]
    on_start: Callable[[Callable[[], bool]], None] = field(default=lambda stop: None)
    """Readies the stage's resources (model, ...) before the first record; gets a
    ``stop()`` predicate so that a long wait still honours SIGTERM."""


def per_record(transform: Callable[[Received[In]], Out]) -> Callable[[list[Received[In]]], list[Out | RecordError]]:
    """Lift a one-record transform to a batch transform that keeps each RecordError."""
    return lambda batch: map_valid(batch, transform, lambda outputs: outputs)


def client_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """What every Kafka client of Fruits! is configured with: the brokers, and the security
    protocol with this process's identity's credentials (``Settings.kafka_security_config``)."""
    return {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        **settings.kafka_security_config(),
        "logger": LIBRDKAFKA_LOGGER,
        **extra,
    }


def stage_group_id(stage: str) -> str:
    """The consumer group of a stage's instances (its ACLs: ``tools.kafka_acls``)."""
    return f"fruits-{stage}"


def stage_transactional_id(stage: str, instance_id: str) -> str:
    """One instance's transactional.id (and static group member id): the stage's group id,
    a dash and FRUITS_INSTANCE_ID, so that its ACL can name the prefix ``fruits-<stage>-``."""
    return f"{stage_group_id(stage)}-{instance_id}"


def producer_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    return client_config(
        settings,
        **{"linger.ms": 2, "message.max.bytes": size_limits(settings).dead_letter_bytes},  # stages produce dead letters
        **extra,
    )


def consumer_config(settings: Settings, group_id: str, **extra: Any) -> dict[str, Any]:
    return client_config(
        settings,
        **{
            "group.id": group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            # The broker answers a fetch as soon as data is there; this only bounds how long
            # an empty fetch waits, so it trades idle broker CPU against nothing.
            "fetch.wait.max.ms": 100,
        },
        **extra,
    )


def metadata_problem(settings: Settings, timeout: float) -> KafkaError | None:
    """None once a broker answers a metadata request of this identity, else why not: the
    login or TLS failure if there was one (a wrong password is not "unreachable")."""
    from confluent_kafka.admin import AdminClient

    errors: list[KafkaError] = []
    # Refused connections are the expected failure here: the caller says it once.
    admin = AdminClient(client_config(settings, error_cb=errors.append, log_level=2))
    try:
        admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        admin.poll(0)  # serves error_cb
        refused = (KafkaError._AUTHENTICATION, KafkaError._SSL)
        return next((error for error in errors if error.code() in refused), exc.args[0])
    return None


def check_reachable(settings: Settings, timeout: float = 10.0) -> None:
    """Raise a clear error if no Kafka broker answers at the configured address, or if it
    refuses this identity's login."""
    error = metadata_problem(settings, timeout)
    if error is None:
        return
    where = settings.kafka_bootstrap_servers
    if error.code() == KafkaError._AUTHENTICATION:
        raise ConnectionError(
            f"Kafka at {where} refused the login of {settings.kafka_credentials()[0]!r} "
            f"(FRUITS_KAFKA_USERNAME / FRUITS_KAFKA_PASSWORD, or the local stack's {settings.secrets_dir}): {error.str()}"
        )
    raise ConnectionError(
        f"cannot reach Kafka at {where} with {settings.kafka_security_protocol} "
        f"(is the stack up? `make up`, or set FRUITS_KAFKA_BOOTSTRAP_SERVERS): {error.str()}"
    )


def where(msg: Message) -> str:
    return f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"


def dead_letter(stage: str, msg: Message, error: RecordError, photo_id: str | None) -> DeadLetter:
    return DeadLetter(
        source_topic=msg.topic(),
        source_partition=msg.partition(),
        source_offset=msg.offset(),
        stage=stage,
        error_class=error.reason,
        error_message=str(error)[:DEAD_LETTER_MESSAGE_CHARS],
        photo_id=photo_id,
        failed_at=datetime.now(timezone.utc),
        original_key=msg.key(),
        original_value=msg.value(),
    )


class StopFlag:
    """Set by SIGTERM/SIGINT: the loop finishes and commits its batch, then exits."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: self.event.set())

    def __bool__(self) -> bool:
        return self.event.is_set()


def poll_batch(consumer: Consumer, max_records: int, timeout: float) -> list[Message]:
    """Wait up to ``timeout`` for one record, then take what is already fetched:
    small batches at low load (low latency), full batches under load (throughput)."""
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *consumer.consume(num_messages=max_records - 1, timeout=0)]


def next_offsets(messages: Sequence[Message]) -> list[TopicPartition]:
    highest: dict[tuple[str, int], int] = {}
    for msg in messages:
        key = (msg.topic(), msg.partition())
        highest[key] = max(highest.get(key, -1), msg.offset())
    return [TopicPartition(topic, partition, offset + 1) for (topic, partition), offset in highest.items()]


class StageRunner(Generic[In, Out]):
    def __init__(self, stage: Stage[In, Out], settings: Settings, stop: StopFlag) -> None:
        self.stage = stage
        self.settings = settings
        self.stop = stop
        self.metrics = metrics.stage_metrics(stage.name, stage.output_topic, settings.metrics_enabled)
        member = stage_transactional_id(stage.name, settings.instance_id)
        # Consumer lag comes from librdkafka's own statistics (no extra broker requests);
        # the callback runs inside poll(), on this thread.
        statistics = {
            "statistics.interval.ms": round(settings.metrics_stats_interval_seconds * 1000),
            "stats_cb": self.metrics.kafka_statistics,
        } if settings.metrics_enabled else {}  # fmt: skip
        self.consumer = Consumer(
            consumer_config(
                settings,
                group_id=stage_group_id(stage.name),
                # Static membership: a restarted instance takes its partitions back at
                # once instead of waiting for the session timeout.
                **{"group.instance.id": member},
                **statistics,
            )
        )
        self.producer = Producer(producer_config(settings, **{"transactional.id": member}))

    def run(self) -> None:
        stage = self.stage
        stage.on_start(lambda: bool(self.stop))
        if self.stop:
            return
        self.producer.init_transactions(60)
        self.consumer.subscribe([stage.input_topic])
        log.info("%s: consuming %s → %s", stage.name, stage.input_topic, stage.output_topic)
        try:
            while not self.stop:
                self._run_transaction()
        finally:
            self.consumer.close()
            self.producer.flush(10)
        log.info("%s: stopped", stage.name)

    def _poll(self, max_records: int, timeout: float) -> list[Message]:
        return [m for m in poll_batch(self.consumer, max_records, timeout) if not self._is_error(m)]

    def _run_transaction(self) -> None:
        """One transaction: from the first record, keep taking records for up to
        ``commit_interval_seconds`` (or until a full batch), then commit them together.
        Under load this amortises the broker's per-transaction cost over many records;
        when idle no transaction is open."""
        settings = self.settings
        messages = self._poll(settings.max_batch_records, settings.poll_timeout_seconds)
        if not messages:
            return
        deadline = time.monotonic() + settings.commit_interval_seconds
        self.producer.begin_transaction()
        done: list[Message] = []
        while messages:
            self._process(messages)
            done += messages
            remaining = deadline - time.monotonic()
            if len(done) >= settings.max_batch_records or remaining <= 0 or self.stop:
                break
            messages = self._poll(settings.max_batch_records - len(done), remaining)
        self.producer.send_offsets_to_transaction(next_offsets(done), self.consumer.consumer_group_metadata())
        self._commit(done)

    def _is_error(self, msg: Message) -> bool:
        err = msg.error()
        if err is None:
            return False
        if err.fatal() or not err.retriable() and err.code() != KafkaError._PARTITION_EOF:
            raise KafkaException(err)
        log.warning("%s: consumer: %s", self.stage.name, err)
        return True

    def _process(self, messages: list[Message]) -> None:
        """Decode and transform ``messages``; produce their outputs and dead letters."""
        stage = self.stage
        started = time.perf_counter()
        received = [self._receive(msg) for msg in messages]
        self.metrics.consumed(len(messages))
        outcomes = map_valid(received, lambda item: item, stage.transform)
        produced = 0
        for msg, item, outcome in zip(messages, received, outcomes):
            if isinstance(outcome, RecordError):
                log.warning("%s: %s → dead letter: %s: %s", stage.name, where(msg), outcome.reason, outcome)
                photo_id = None if isinstance(item, RecordError) else photo_id_of(item.record)
                letter = dead_letter(stage.name, msg, outcome, photo_id)
                self.producer.produce(self.settings.topic_dead_letter, key=msg.key(), value=encode_record(letter))
                self.metrics.dead_letter(outcome.reason)
            else:
                self.producer.produce(stage.output_topic, key=msg.key(), value=encode_record(outcome))
                produced += 1
            self.producer.poll(0)
        self.metrics.processed(
            produced, time.perf_counter() - started, (msg.timestamp()[1] for msg in messages), time.time()
        )

    def _receive(self, msg: Message) -> Received[In] | RecordError:
        try:
            record = decode_record(self.stage.input_type, msg.value())
        except RecordError as error:
            return error
        return Received(record, datetime.fromtimestamp(msg.timestamp()[1] / 1000, timezone.utc), where(msg))

    def _commit(self, messages: list[Message]) -> None:
        while True:
            try:
                self.producer.commit_transaction(30)
                self.metrics.transaction(len(messages), committed=True)
                return
            except KafkaException as exc:
                error = exc.args[0]
                if error.retriable():
                    log.warning("%s: commit failed, retrying: %s", self.stage.name, error)
                    continue
                if error.txn_requires_abort():
                    log.warning(
                        "%s: commit failed, aborting %d records from %s: %s",
                        self.stage.name,
                        len(messages),
                        where(messages[0]),
                        error,
                    )
                    self.producer.abort_transaction(30)
                    self.metrics.transaction(len(messages), committed=False)
                    self._rewind()
                    return
                raise

    def _rewind(self) -> None:
        """Seek every assigned partition back to its committed offset after an abort."""
        for tp in self.consumer.committed(self.consumer.assignment(), timeout=30):
            if tp.offset < 0:
                tp.offset = OFFSET_BEGINNING
            self.consumer.seek(tp)


def run_stage(stage: Stage[Any, Any], settings: Settings) -> None:
    """Run ``stage`` until SIGTERM/SIGINT; serves /metrics on the stage's port."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = StopFlag()
    stop.install()
    try:  # a dead letter of the largest record must fit: refuse to start rather than fail record by record
        check_size_limits(settings)
    except ValueError as exc:
        log.critical("%s: %s", stage.name, exc)
        raise SystemExit(2) from None
    check_reachable(settings)
    if settings.metrics_enabled:
        port = metrics.serve_metrics(stage.name, settings.metrics_port, settings.metrics_host)
        log.info("%s: metrics on http://%s:%d/metrics", stage.name, settings.metrics_host, port)
    else:
        log.info("%s: metrics disabled (FRUITS_METRICS_ENABLED=false)", stage.name)
    log.info(READY_MESSAGE, stage.name)
    StageRunner(stage, settings, stop).run()

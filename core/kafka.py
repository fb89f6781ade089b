"""Kafka plumbing: client configuration and the exactly-once stage loop.

Every service is a ``Stage``: it reads one input topic, turns each record into one
output record (or a ``RecordError``), and the loop here does the rest, following
confluent-kafka-python's exactly-once example: a transactional producer, a
read_committed consumer without auto-commit, and per batch
``begin → produce outputs and dead letters → send_offsets_to_transaction → commit``.
Each output carries its input's hop headers and the stage's own (``core.hops``: when it
received, processed and produced the record); dead letters carry none.

What can go wrong, and what the loop does (``StageRunner``; each branch has a unit test):

- a retriable error of a transactional call: the same call again (librdkafka's rule), at a
  growing interval, then as a Kafka outage at the longest interval, until it succeeds or fails
  for good; SIGTERM meanwhile leaves without committing. But once Kafka was lost (every broker
  down, or the coordinator's connection broken) the open transaction is dropped with its
  producer for a new one instead: the old one may wedge when the broker is back;
- an abortable error (in produce, send_offsets or commit), partitions revoked or lost (the
  rebalance callbacks), a dependency outage (``DependencyError``: S3, the model store): the
  transaction is aborted and the consumer rewound to the committed offsets, so the batch is
  redone (here or by the partitions' new owner) and nothing is lost or duplicated; an outage
  is waited out with backoff first;
- a fatal error (fenced: another process took this slot's ids): ``FatalKafkaError``, and the
  process exits with ``EXIT_RESTART`` for its supervisor to start it again;
- an unexpected exception in the transform: the batch is tried again, then halved until the
  records it fails on are found; each is dead-lettered as ``internal_error`` after as many tries.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Generic, TypeVar

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from core import hops, metrics
from core.errors import DependencyError, Reason, RecordError, dependency_error, map_valid
from core.limits import DEAD_LETTER_MESSAGE_CHARS, check_size_limits, size_limits
from core.records import DeadLetter, Record, decode_record, encode_record, photo_id_of
from core.s3 import is_outage as is_s3_outage
from core.settings import Settings
from core.slots import SlotTaken, claim_slot

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
    observes_hops: bool = False
    """Record the hop times of each output's whole path (``core.hops``) in the metrics: the
    last stage does, where the path is complete."""


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


def producer_config(settings: Settings, **role: Any) -> dict[str, Any]:
    """Every producer's configuration: the defaults, FRUITS_KAFKA_PRODUCER_OPTIONS over them,
    then what the caller's ``role`` needs (its transactional.id, idempotence, callbacks)."""
    defaults = {
        "linger.ms": 2,
        "message.max.bytes": size_limits(settings).dead_letter_bytes,  # stages produce dead letters
        "compression.type": settings.kafka_compression,
        # A transaction's first request right after the previous commit is often refused with
        # CONCURRENT_TRANSACTIONS while the commit markers are written; librdkafka retries it
        # after this wait (default 100 ms). Backoff still doubles up to retry.backoff.max.ms
        # on repeated failures. Demo p99 at 40/s: 54 ms against 68–183 ms (README).
        "retry.backoff.ms": 10,
    }
    return client_config(settings, **{**defaults, **settings.kafka_producer_options, **role})


def consumer_config(settings: Settings, group_id: str, **role: Any) -> dict[str, Any]:
    """Every consumer's configuration, as ``producer_config`` (FRUITS_KAFKA_CONSUMER_OPTIONS);
    its group, its manual commits and read_committed are never overridden."""
    defaults = {
        "auto.offset.reset": "earliest",
        # The broker answers a fetch as soon as data is there; this only bounds how long
        # an empty fetch waits, so it trades idle broker CPU against nothing.
        "fetch.wait.max.ms": 100,
    }
    fixed = {"group.id": group_id, "enable.auto.commit": False, "isolation.level": "read_committed"}
    return client_config(settings, **{**defaults, **settings.kafka_consumer_options, **fixed, **role})


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


EXIT_RESTART = 75
"""Exit status after a fatal Kafka error (EX_TEMPFAIL): the process's supervisor (`fruits
services`, Docker's or Kubernetes' restart policy) starts it again."""

CALL_TIMEOUT_SECONDS = 10.0
"""How long one blocking Kafka call (commit, send offsets, abort, committed offsets) may take
before it counts as a retriable failure; librdkafka carries on with it in the background."""

FENCED = (KafkaError._FENCED, KafkaError.FENCED_INSTANCE_ID, KafkaError.PRODUCER_FENCED)

WEDGED_AFTER_SECONDS = 2 * CALL_TIMEOUT_SECONDS
"""A Kafka call still blocked this long, twice its own timeout, is wedged (``Watchdog``)."""


class FatalKafkaError(Exception):
    """The producer or consumer cannot go on: fenced (another process took this slot's
    transactional.id or group.instance.id) or another fatal librdkafka error.

    The process exits (``EXIT_RESTART``) rather than re-initialising its clients: a fresh
    process takes its slot's lock again (``core.slots``), so if the slot really is another
    live process's now it refuses to start instead of fencing that one in turn; and after an
    outage longer than the transaction timeout it simply starts clean."""


class _Redo(Exception):
    """The open batch cannot be committed: abort it, rewind to the committed offsets, and
    (after waiting, for an outage) take the records again."""

    def __init__(self, why: str, outage: DependencyError | None = None, renew: bool = False) -> None:
        super().__init__(why)
        self.outage = outage
        self.renew = renew
        """Kafka was lost mid-transaction: drop the producer with its transaction for a new one."""


class _Stopping(Exception):
    """SIGTERM came while waiting for Kafka: leave without committing (the broker aborts the
    open transaction, at the latest when this slot's next process starts)."""


class Watchdog:
    """Ends the process when a Kafka call stays blocked long past its own timeout.

    librdkafka can wedge there: ``send_offsets_to_transaction`` ignores its timeout while the
    group coordinator is away or was replaced (librdkafka issues 5456 and 5511; seen here when
    the broker is killed and restarted mid-transaction), and nothing can interrupt a thread
    blocked in C. The way out is the one a fatal error takes: exit with ``EXIT_RESTART``; the
    supervisor starts the process again, and its init_transactions aborts the open transaction.
    The stage loop marks each call (``watching``); a daemon thread checks every ``interval``."""

    def __init__(
        self,
        stage: str,
        limit: float = WEDGED_AFTER_SECONDS,
        interval: float = 1.0,
        on_wedged: Callable[[], None] | None = None,
    ) -> None:
        self.stage = stage
        self.limit = limit
        self.interval = interval
        self.on_wedged = on_wedged or self._exit
        self.call: tuple[str, float] | None = None
        self.thread = threading.Thread(target=self._watch, name="kafka-watchdog", daemon=True)

    def start(self) -> Watchdog:
        self.thread.start()
        return self

    @contextmanager
    def watching(self, name: str) -> Iterator[None]:
        self.call = (name, time.monotonic())
        try:
            yield
        finally:
            self.call = None

    def _watch(self) -> None:
        while True:
            time.sleep(self.interval)
            call = self.call
            if call is not None and time.monotonic() - call[1] > self.limit:
                log.critical(
                    "%s: %s has been blocked for over %.0f s, past its own timeout (librdkafka wedged); "
                    "exiting (status %d) to be restarted",
                    self.stage,
                    call[0],
                    self.limit,
                    EXIT_RESTART,
                )
                self.on_wedged()
                return

    @staticmethod
    def _exit() -> None:
        logging.shutdown()  # flush the log: os._exit skips the interpreter's own cleanup
        os._exit(EXIT_RESTART)


class Backoff:
    """Waits that double from ``initial`` up to ``maximum``; ``reset`` after a success."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = initial
        self.maximum = max(maximum, initial)
        self.attempts = 0

    def next_delay(self) -> float:
        delay = min(self.maximum, self.initial * 2 ** min(self.attempts, 32))
        self.attempts += 1
        return delay

    def reset(self) -> None:
        self.attempts = 0


def outage_of(exc: BaseException) -> DependencyError | None:
    """``exc`` as a dependency outage (waited out, never a record's fault), or None: a
    DependencyError, a network error, or one of S3's outage errors that a call site did not
    wrap (``core.s3.is_outage``)."""
    found = dependency_error(exc)
    if found is None and is_s3_outage(exc):
        found = DependencyError("S3", type(exc).__name__)
    return found


def exception_name(exc: BaseException) -> str:
    """``ValueError``, ``numpy.linalg.LinAlgError``: what a dead letter says of an unexpected
    exception (its text may quote the record)."""
    kind = type(exc)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


class StageRunner(Generic[In, Out]):
    """Runs a Stage: owns the consumer, the transactional producer and the open transaction."""

    def __init__(
        self,
        stage: Stage[In, Out],
        settings: Settings,
        stop: StopFlag,
        instance_id: str | None = None,
        *,
        consumer: Any = None,
        producer: Any = None,
        new_producer: Callable[[], Any] | None = None,
        sleep: Callable[[float], bool] | None = None,
        watchdog: Watchdog | None = None,
    ) -> None:
        """``instance_id``: the slot this process holds (``core.slots``); by default the
        setting, or "0". ``consumer``, ``producer``, ``new_producer`` (makes the producer
        anew after Kafka was lost) and ``sleep`` (waits that many seconds, True if stopped
        meanwhile) replace the real ones in tests; ``watchdog`` (started) watches the blocking
        Kafka calls (``run_stage`` gives one)."""
        self.stage = stage
        self.settings = settings
        self.stop = stop
        self.metrics = metrics.stage_metrics(stage.name, stage.output_topic, settings.metrics_enabled)
        self.instance_id = instance_id or settings.instance_id or "0"
        member = stage_transactional_id(stage.name, self.instance_id)
        # Consumer lag comes from librdkafka's own statistics (no extra broker requests);
        # the callback runs inside poll(), on this thread.
        statistics = {
            "statistics.interval.ms": round(settings.metrics_stats_interval_seconds * 1000),
            "stats_cb": self.metrics.kafka_statistics,
        } if settings.metrics_enabled else {}  # fmt: skip
        self.consumer = consumer or Consumer(
            consumer_config(
                settings,
                group_id=stage_group_id(stage.name),
                # Static membership: a restarted instance takes its partitions back at
                # once instead of waiting for the session timeout.
                **{"group.instance.id": member, "error_cb": self._client_error},
                **statistics,
            )
        )
        self.new_producer = new_producer or (
            lambda: Producer(producer_config(settings, **{"transactional.id": member, "error_cb": self._client_error}))
        )
        self.producer = producer or self.new_producer()
        self.kafka_lost = False
        """Set by the error callback when every broker was unreachable: the producer is made anew."""
        self.sleep = sleep or stop.event.wait
        self.watchdog = watchdog
        self.batch: list[Message] = []
        """The records of the open transaction (empty when none is open)."""
        self.produced_at: list[float] = []
        """When each output of the open transaction was produced (Unix time): its commit wait."""
        self.in_transaction = False
        self.rebalanced = False
        """Set by the rebalance callbacks: what the current poll returned is not to be used."""
        self.outage = Backoff(settings.retry_backoff_initial_seconds, settings.retry_backoff_max_seconds)

    def run(self) -> None:
        stage = self.stage
        stage.on_start(lambda: bool(self.stop))
        if self.stop:
            return
        try:
            self._call(
                "init_transactions", lambda: self.producer.init_transactions(CALL_TIMEOUT_SECONDS), FatalKafkaError
            )
            self.consumer.subscribe(
                [stage.input_topic], on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost
            )
            log.info(
                "%s: consuming %s → %s as instance %s",
                stage.name,
                stage.input_topic,
                stage.output_topic,
                self.instance_id,
            )
            while not self.stop:
                self._run_transaction()
        except _Stopping as stopping:
            log.warning(
                "%s: stopped while waiting for Kafka (%s); the open transaction, if any, is aborted by the broker",
                stage.name,
                stopping,
            )
        finally:
            self._close()
        log.info("%s: stopped", stage.name)

    def _close(self) -> None:
        # Leaving: a transaction still open (stopped while waiting for Kafka, or fenced) is
        # aborted by the broker, not by the revoke callback that close() runs.
        self.in_transaction = False
        try:
            self.consumer.close()
        except (KafkaException, RuntimeError) as exc:  # a fenced consumer may refuse to leave cleanly
            log.warning("%s: closing the consumer: %s", self.stage.name, exc)
        self.producer.flush(CALL_TIMEOUT_SECONDS)

    # --- One transaction --------------------------------------------------------------------

    def _run_transaction(self) -> None:
        """One transaction: from the first record, keep taking records for up to
        ``commit_interval_seconds`` (or until a full batch), then commit them together.
        Under load this amortises the broker's per-transaction cost over many records;
        when idle no transaction is open. Whatever stops it from committing aborts it and
        rewinds (``_redo``)."""
        settings = self.settings
        try:
            messages = self._poll(settings.max_batch_records, settings.poll_timeout_seconds)
            if not messages:
                return
            deadline = time.monotonic() + settings.commit_interval_seconds
            if self.kafka_lost:
                self._renew_producer()
            self._call("begin_transaction", self.producer.begin_transaction, FatalKafkaError)
            self.in_transaction = True
            while messages:
                self.batch += messages
                self._process(messages)
                remaining = deadline - time.monotonic()
                if len(self.batch) >= settings.max_batch_records or remaining <= 0 or self.stop:
                    break
                messages = self._poll(settings.max_batch_records - len(self.batch), remaining)
            offsets, group = next_offsets(self.batch), self.consumer.consumer_group_metadata()
            self._call(
                "send_offsets_to_transaction",
                lambda: self.producer.send_offsets_to_transaction(offsets, group, CALL_TIMEOUT_SECONDS),
            )
            self._call("commit_transaction", lambda: self.producer.commit_transaction(CALL_TIMEOUT_SECONDS))
            self.in_transaction = False
            self.metrics.transaction(len(self.batch), committed=True)
            self.metrics.committed_outputs(self.produced_at, time.time())
            self.outage.reset()
        except _Redo as redo:
            self._redo(redo)
        finally:
            self.batch = []
            self.produced_at = []

    def _redo(self, redo: _Redo) -> None:
        """Abort the open transaction (if the rebalance callback has not), rewind, and wait
        first if a dependency is away: the batch's records are taken again from the
        committed offsets, by this process or by their partitions' new owner."""
        if redo.renew:
            # No abort: the old producer may wedge in it too. The new producer's init_transactions
            # (same transactional.id) aborts the open transaction, or completes a commit the
            # broker had begun, before the rewind below reads the committed offsets.
            log.warning("%s: dropping the transaction of %d records: %s", self.stage.name, len(self.batch), redo)
            self.in_transaction = False
            self.metrics.transaction(len(self.batch), committed=False)
            self._renew_producer(drop_pending=True)
        elif self.in_transaction:
            self._abort(str(redo))
        self._rewind()
        if redo.outage is not None:
            delay = self.outage.next_delay()
            log.warning(
                "%s: %s is unavailable (%s); retrying in %.1f s",
                self.stage.name,
                redo.outage.dependency,
                redo.outage.detail,
                delay,
            )
            self.metrics.retry("dependency", delay)
            self.sleep(delay)  # SIGTERM ends the wait, and the run loop

    def _abort(self, why: str) -> None:
        batch = self.batch
        log.warning(
            "%s: aborting the transaction of %d records from %s: %s",
            self.stage.name,
            len(batch),
            where(batch[0]) if batch else "-",
            why,
        )
        self._call("abort_transaction", lambda: self.producer.abort_transaction(CALL_TIMEOUT_SECONDS), FatalKafkaError)
        self.in_transaction = False
        self.metrics.transaction(len(batch), committed=False)

    def _rewind(self) -> None:
        """Seek every assigned partition back to its committed offset, where the next
        transaction starts. A partition that is not fetching yet (just assigned) has
        delivered nothing and starts there anyway."""
        assignment = self.consumer.assignment()
        if not assignment:
            return
        backoff = Backoff(self.settings.retry_backoff_initial_seconds, self.settings.retry_backoff_max_seconds)
        while True:
            try:
                with self._watching("committed"):
                    committed = self.consumer.committed(assignment, timeout=CALL_TIMEOUT_SECONDS)
                if not any(tp.error for tp in committed):
                    break
                problem: object = next(tp.error for tp in committed if tp.error)
            except KafkaException as exc:
                if exc.args[0].fatal():
                    raise FatalKafkaError(f"reading the committed offsets: {exc.args[0]}") from exc
                problem = exc.args[0]
            delay = backoff.next_delay()
            log.warning(
                "%s: cannot read the committed offsets (%s); retrying in %.1f s", self.stage.name, problem, delay
            )
            self.metrics.retry("kafka", delay)
            if self.sleep(delay):
                raise _Stopping("reading the committed offsets")
        for tp in committed:
            if tp.offset < 0:  # nothing committed yet: from the start, as auto.offset.reset=earliest
                tp.offset = OFFSET_BEGINNING
            try:
                self.consumer.seek(tp)
            except KafkaException as exc:
                if exc.args[0].code() not in (KafkaError._STATE, KafkaError._UNKNOWN_PARTITION):
                    raise FatalKafkaError(f"rewinding {tp.topic}[{tp.partition}]: {exc.args[0]}") from exc

    def _call(self, name: str, call: Callable[[], Any], failure: type[Exception] = _Redo) -> Any:
        """A call to the transactional producer. A retriable error calls it again (the
        same call, as librdkafka requires: another one would be refused while it is in
        progress) at a growing interval: ``transaction_retries`` times as retries, then as a
        Kafka outage at up to the longest interval, until it succeeds or fails for good.
        An abortable error raises ``failure`` (``_Redo``: abort and redo the batch), a fatal
        one FatalKafkaError; SIGTERM while waiting raises _Stopping."""
        backoff = Backoff(self.settings.retry_backoff_initial_seconds, self.settings.retry_backoff_max_seconds)
        while True:
            try:
                with self._watching(name):
                    return call()
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if error.fatal() or error.code() in FENCED:
                    raise FatalKafkaError(f"{name}: {error}") from exc
                if not error.retriable():
                    raise failure(f"{name} failed: {error}") from exc
                if failure is _Redo:
                    self.producer.poll(0)  # serves the error news: all brokers down
                    if self.kafka_lost or error.code() == KafkaError._TRANSPORT:
                        # The coordinator's connection broke, or every broker went away: tried
                        # again once it is back, the call may wedge on a coordinator that is
                        # gone (librdkafka 5456).
                        raise _Redo(f"{name} failed after Kafka was lost: {error}", renew=True) from exc
                delay = backoff.next_delay()
                if backoff.attempts <= self.settings.transaction_retries:
                    cause = "kafka"
                    log.warning(
                        "%s: %s failed (%s); retry %d of %d in %.1f s",
                        self.stage.name,
                        name,
                        error,
                        backoff.attempts,
                        self.settings.transaction_retries,
                        delay,
                    )
                else:
                    cause = "dependency"
                    log.warning(
                        "%s: Kafka is unavailable: %s failed %d times (%s); retrying in %.1f s",
                        self.stage.name,
                        name,
                        backoff.attempts,
                        error,
                        delay,
                    )
                self.metrics.retry(cause, delay)
                if self.sleep(delay):
                    raise _Stopping(name) from exc

    def _client_error(self, error: KafkaError) -> None:
        """librdkafka's ``error_cb`` (served inside poll and the transactional calls). Fatal
        errors surface in those calls; this notes that every broker was unreachable."""
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            if not self.kafka_lost:
                log.warning("%s: Kafka is unavailable (%s); waiting for it", self.stage.name, error)
            self.kafka_lost = True

    def _renew_producer(self, drop_pending: bool = False) -> None:
        """A new transactional producer (same transactional.id) after Kafka was lost: once its
        brokers restarted, librdkafka's producer may keep a coordinator that is gone, and then
        wedge in send_offsets_to_transaction (librdkafka issues 5456 and 5511); a new one
        looks its coordinators up afresh. Called between transactions, or with ``drop_pending``
        in place of one whose records are not to be delivered (it is being dropped)."""
        log.warning("%s: starting a new transactional producer after Kafka was lost", self.stage.name)
        with self._watching("replacing the producer"):
            if drop_pending:
                self.producer.purge(in_queue=True, in_flight=True, blocking=False)
            self.producer.flush(CALL_TIMEOUT_SECONDS)  # serves the old one's last callbacks, its error news too
            self.producer = self.new_producer()
        self.kafka_lost = False
        self._call("init_transactions", lambda: self.producer.init_transactions(CALL_TIMEOUT_SECONDS), FatalKafkaError)

    def _watching(self, name: str) -> AbstractContextManager[None]:
        return self.watchdog.watching(name) if self.watchdog else nullcontext()

    # --- Rebalance callbacks (called inside poll/consume, on this thread) -----------------

    def _assigned(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        log.info("%s: assigned %s", self.stage.name, describe(partitions))
        self.metrics.rebalance("assigned")

    def _revoked(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._taken_away("revoked", partitions)

    def _lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._taken_away("lost", partitions)

    def _taken_away(self, event: str, partitions: list[TopicPartition]) -> None:
        """Partitions go to another member: the open transaction is aborted at once (its
        offsets could no longer be committed with this generation anyway), so the new owner
        redoes its records; what this poll returns is dropped and the rest rewound."""
        log.info("%s: %s %s", self.stage.name, event, describe(partitions))
        self.metrics.rebalance(event)
        self.rebalanced = True
        if self.in_transaction:
            self._abort(f"partitions {event}")

    # --- Records ------------------------------------------------------------------------------

    def _poll(self, max_records: int, timeout: float) -> list[Message]:
        messages = poll_batch(self.consumer, max_records, timeout)
        if self.rebalanced:  # a rebalance ran inside this poll: it may have returned records of the old assignment
            self.rebalanced = False
            raise _Redo("rebalance")
        return [m for m in messages if not self._is_error(m)]

    def _is_error(self, msg: Message) -> bool:
        """A consumer error event: fatal ones end the process, the others are librdkafka's
        news (a broker went away, ...) that it recovers from by itself."""
        err = msg.error()
        if err is None:
            return False
        if err.fatal():
            raise FatalKafkaError(f"consumer: {err}")
        if err.code() != KafkaError._PARTITION_EOF:
            log.warning("%s: consumer: %s", self.stage.name, err)
        return True

    def _process(self, messages: list[Message]) -> None:
        """Decode and transform ``messages``; produce their outputs and dead letters."""
        stage = self.stage
        started, received_at = time.perf_counter(), time.time()
        received = [self._receive(msg) for msg in messages]
        self.metrics.consumed(len(messages))
        outcomes = self._outcomes(messages, received, self.settings.transform_attempts)
        processed_at = time.time()
        produced = 0
        for msg, item, outcome in zip(messages, received, outcomes):
            if not isinstance(outcome, RecordError):
                try:
                    encoded = encode_record(outcome)
                except Exception as exc:  # a transform's bug: tried again it would fail the same way
                    log.exception("%s: %s: cannot encode the output", stage.name, where(msg))
                    outcome = RecordError(Reason.INTERNAL_ERROR, f"{exception_name(exc)} encoding the output")
            if isinstance(outcome, RecordError):
                log.warning("%s: %s → dead letter: %s: %s", stage.name, where(msg), outcome.reason, outcome)
                photo_id = None if isinstance(item, RecordError) else photo_id_of(item.record)
                letter = dead_letter(stage.name, msg, outcome, photo_id)
                self._produce(self.settings.topic_dead_letter, msg.key(), encode_record(letter))
                self.metrics.dead_letter(outcome.reason)
            else:
                produced_at = time.time()
                headers = hops.carried(msg.headers(), msg.timestamp()[1])
                headers.append(hops.hop_header(hops.Hop(stage.name, received_at, processed_at, produced_at)))
                self._produce(stage.output_topic, msg.key(), encoded, headers)
                self.produced_at.append(produced_at)
                if stage.observes_hops:
                    self.metrics.hops(hops.hop_seconds(*hops.parse(headers)))
                produced += 1
            self.producer.poll(0)
        self.metrics.processed(
            produced, time.perf_counter() - started, (msg.timestamp()[1] for msg in messages), time.time()
        )

    def _outcomes(
        self, messages: list[Message], items: list[Received[In] | RecordError], attempts: int
    ) -> list[Out | RecordError]:
        """The transform's outcomes for ``items``, trying it ``attempts`` times if it raises
        an unexpected exception. Then the batch is halved (each half tried once, a single
        record ``transform_attempts`` times) until the records it fails on are found: each of
        those becomes an ``internal_error`` that names the exception's type only (its text may
        quote the record). A dependency outage raises _Redo at once, at any depth: it is
        never a record's fault."""
        failure: Exception | None = None
        for attempt in range(attempts):
            try:
                return map_valid(items, lambda item: item, self.stage.transform)
            except Exception as exc:
                if isinstance(exc, RecordError) and len(items) == 1:
                    return [exc]  # a transform that raises its one record's RecordError
                outage = outage_of(exc)
                if outage is not None:
                    raise _Redo(str(outage), outage) from exc
                failure = exc
                if attempt == 0:
                    log.warning(
                        "%s: the transform of %d records from %s raised %s",
                        self.stage.name,
                        len(items),
                        where(messages[0]),
                        exception_name(exc),
                        exc_info=True,
                    )
                if attempt + 1 < attempts:
                    self.metrics.retry("transform")
        assert failure is not None
        if len(items) == 1:
            return [RecordError(Reason.INTERNAL_ERROR, f"{exception_name(failure)} raised in {attempts} tries")]
        half = len(items) // 2
        tries = self.settings.transform_attempts
        return [
            *self._outcomes(messages[:half], items[:half], tries if half == 1 else 1),
            *self._outcomes(messages[half:], items[half:], tries if len(items) - half == 1 else 1),
        ]

    def _produce(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        while True:
            try:
                self.producer.produce(topic, key=key, value=value, headers=headers)
                return
            except BufferError:  # the local queue is full: let deliveries drain it
                self.producer.poll(0.5)
                if self.stop:
                    raise _Stopping("producing") from None
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if error.fatal() or error.code() in FENCED:
                    raise FatalKafkaError(f"produce: {error}") from exc
                raise _Redo(f"produce failed: {error}") from exc

    def _receive(self, msg: Message) -> Received[In] | RecordError:
        try:
            record = decode_record(self.stage.input_type, msg.value())
        except RecordError as error:
            return error
        except Exception as exc:  # a bug of the decoder: this record would fail the same way every time
            log.exception("%s: %s: cannot decode the record", self.stage.name, where(msg))
            return RecordError(Reason.INTERNAL_ERROR, f"{exception_name(exc)} decoding the record")
        return Received(record, datetime.fromtimestamp(msg.timestamp()[1] / 1000, timezone.utc), where(msg))


def describe(partitions: Sequence[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "no partitions"


def wait_reachable(settings: Settings, stop: StopFlag, stage: str) -> bool:
    """Wait until a broker answers, with backoff: a service started while Kafka is away (e.g.
    restarted by its supervisor while the broker restarts too) waits for it instead of exiting
    into a crash loop whose growing restart delays would outlast the outage. A refused login
    does not go away by waiting: it raises check_reachable's error. False if stopped meanwhile."""
    backoff = Backoff(settings.retry_backoff_initial_seconds, settings.retry_backoff_max_seconds)
    while (error := metadata_problem(settings, CALL_TIMEOUT_SECONDS)) is not None:
        if error.code() == KafkaError._AUTHENTICATION:
            check_reachable(settings)
        delay = backoff.next_delay()
        log.warning(
            "%s: Kafka at %s is unavailable (%s); retrying in %.1f s",
            stage,
            settings.kafka_bootstrap_servers,
            error.str(),
            delay,
        )
        if stop.event.wait(delay):
            return False
    return True


def run_stage(stage: Stage[Any, Any], settings: Settings) -> None:
    """Run ``stage`` until SIGTERM/SIGINT; serves /metrics on the stage's port. Refuses to
    start (status 2) on a replica slot another live process holds; waits for Kafka if it is
    away; exits with EXIT_RESTART after a fatal Kafka error."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = StopFlag()
    stop.install()
    try:  # a dead letter of the largest record must fit: refuse to start rather than fail record by record
        check_size_limits(settings)
        slot = claim_slot(settings.state_dir, stage.name, settings.instance_id)
    except (ValueError, SlotTaken) as exc:
        log.critical("%s: %s", stage.name, exc)
        raise SystemExit(2) from None
    if not wait_reachable(settings, stop, stage.name):
        log.info("%s: stopped while waiting for Kafka", stage.name)
        return
    if settings.metrics_enabled:
        port = metrics.serve_metrics(stage.name, settings.metrics_port, settings.metrics_host)
        log.info("%s: metrics on http://%s:%d/metrics", stage.name, settings.metrics_host, port)
    else:
        log.info("%s: metrics disabled (FRUITS_METRICS_ENABLED=false)", stage.name)
    log.info(READY_MESSAGE, stage.name)
    try:
        StageRunner(stage, settings, stop, slot.instance_id, watchdog=Watchdog(stage.name).start()).run()
    except FatalKafkaError as exc:
        log.critical("%s: %s; exiting (status %d) to be restarted", stage.name, exc, EXIT_RESTART)
        raise SystemExit(EXIT_RESTART) from None

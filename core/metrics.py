"""Prometheus metrics shared by every Fruits! process.

Metrics are module-level objects in the default registry (created once, on import),
which also holds prometheus_client's process collector (``process_cpu_seconds_total``,
``process_resident_memory_bytes``, ...); each process serves them on its own port with
``serve_metrics``. Labels are bounded: stage, topic, partition, reason, outcome, model
kind and version, predicted class — never photo or user ids.

The hot path stays cheap: a stage binds its label values once (``stage_metrics``) and
counts per batch (``inc(n)``). With ``FRUITS_METRICS_ENABLED=false`` the helpers here are
no-ops, no statistics are requested from librdkafka and no HTTP server is started.
"""

from __future__ import annotations

import json
import logging
from collections import Counter as Tally
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from core.records import Prediction
from core.settings import PIPELINE_SERVICES

log = logging.getLogger(__name__)

STAGE_PORTS = {name: 9101 + index for index, name in enumerate((*PIPELINE_SERVICES, "spark"))}
"""Default /metrics port of each service (overridden by FRUITS_METRICS_PORT)."""

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 30)

RECORDS_CONSUMED = Counter("fruits_records_consumed_total", "Records read from the stage's input topic.", ["stage"])
RECORDS_PRODUCED = Counter(
    "fruits_records_produced_total", "Records written by the stage, per topic.", ["stage", "topic"]
)
DEAD_LETTERS = Counter(
    "fruits_dead_letters_total", "Records sent to the dead-letter topic, per reason.", ["stage", "reason"]
)
TRANSACTIONS = Counter(
    "fruits_transactions_total", "Kafka transactions, by outcome (committed, aborted).", ["stage", "outcome"]
)
RETRIES = Counter(
    "fruits_retries_total",
    "Retries after an error, by cause: kafka (a retriable error of a transactional call), dependency "
    "(Kafka, S3 or the model store away: the batch is aborted, waited out and redone), transform (an "
    "unexpected exception in the stage's transform, retried before its record is dead-lettered).",
    ["stage", "cause"],
)
RETRY_WAIT_SECONDS = Counter(
    "fruits_retry_wait_seconds_total", "Time spent waiting (backoff) before retries, by cause.", ["stage", "cause"]
)
REBALANCES = Counter(
    "fruits_rebalances_total",
    "Consumer group rebalance events of the stage's consumer: assigned, revoked, lost.",
    ["stage", "event"],
)
BATCH_PROCESSING_SECONDS = Histogram(
    "fruits_batch_processing_seconds",
    "Time to decode, transform and produce one batch (excluding the commit).",
    ["stage"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
BATCH_SIZE = Histogram(
    "fruits_batch_size_records", "Records per transaction.", ["stage"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)
)
STAGE_LATENCY_SECONDS = Histogram(
    "fruits_stage_latency_seconds",
    "Per record, from its input record's Kafka timestamp (when the previous stage or the user "
    "produced it) to this stage producing its output: waiting in the topic plus processing.",
    ["stage"],
    buckets=LATENCY_BUCKETS,
)
HOP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 30)
HOP_SECONDS = Histogram(
    "fruits_hop_seconds",
    "Per prediction, the time of each part of each stage's hop (core.hops): wait (from the previous "
    "stage producing the record to this one taking it: the upstream commit, the fetch and the queue), "
    "process (decode and transform), produce (encode and hand to the producer). Recorded by predict.",
    ["hop", "part"],
    buckets=HOP_BUCKETS,
)
COMMIT_WAIT_SECONDS = Histogram(
    "fruits_commit_wait_seconds",
    "Per output record, from its produce to the commit of its transaction: how long the next stage "
    "(reading committed records only) cannot see it.",
    ["stage"],
    buckets=HOP_BUCKETS,
)
END_TO_END_SECONDS = Histogram(
    "fruits_end_to_end_latency_seconds",
    "From the photo event's Kafka timestamp to its prediction.",
    buckets=LATENCY_BUCKETS,
)
CONSUMER_LAG = Gauge(
    "fruits_consumer_lag_records",
    "Records of an assigned input partition not yet consumed (librdkafka statistics).",
    ["stage", "topic", "partition"],
)
MODEL_INFO = Gauge(
    "fruits_model_info",
    "Model versions in use by this process (value always 1; the series of a replaced version is dropped).",
    ["stage", "kind", "version"],
)
MODEL_CREATED = Gauge(
    "fruits_model_created_timestamp_seconds",
    "When the model in use was created (Unix time, from its version YYYYMMDDTHHMMSSZ-xxxx).",
    ["stage", "kind"],
)
PCA_EXPLAINED_VARIANCE = Gauge(
    "fruits_pca_explained_variance_ratio", "Share of the feature variance kept by the current PCA's k components."
)
PCA_COMPONENTS = Gauge("fruits_pca_components", "Number of components (k) of the current PCA.")
PCA_REFITS = Counter(
    "fruits_pca_refits_total",
    "Bundles the streaming job refitted, by outcome: promoted (made current) or held_back (kept as a "
    "candidate: its out-of-fold validation was worse than the current bundle's).",
    ["outcome"],
)
PREDICTIONS = Counter("fruits_predictions_total", "Predictions, by predicted class (141 classes).", ["label"])
PREDICTED_TYPES = Counter(
    "fruits_predicted_types_total",
    "Predictions by fruit type and whether the answer was unsure (below the bundle's calibrated threshold): "
    "a jump in the unsure share means the photos changed (drift) or the model got worse.",
    ["fruit_type", "unsure"],
)
PREDICTION_CONFIDENCE = Histogram(
    "fruits_prediction_confidence",
    "Probability of the predicted class: a shift to lower values signals drift.",
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99),
)


SPARK_BATCH_SECONDS = Histogram(
    "fruits_spark_batch_duration_seconds",
    "Duration of a streaming micro-batch (trigger execution), per query; from the Spark driver.",
    ["query"],
    buckets=(0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120),
)
SPARK_INPUT_ROWS_PER_SECOND = Gauge(
    "fruits_spark_input_rows_per_second", "Input rate of a query's last micro-batch (rows/s).", ["query"]
)
SPARK_ROWS_WRITTEN = Counter(
    "fruits_spark_rows_written_total", "Rows written to a lake table (a replayed micro-batch counts again).", ["table"]
)

GATEWAY_REQUESTS = Counter(
    "fruits_gateway_requests_total",
    "HTTP requests the gateway answered, by route template, method and status code.",
    ["route", "method", "status"],
)
GATEWAY_REQUEST_SECONDS = Histogram(
    "fruits_gateway_request_seconds",
    "Time to answer an HTTP request (an event stream: until its headers), by route template.",
    ["route"],
    buckets=LATENCY_BUCKETS,
)
GATEWAY_IN_FLIGHT = Gauge(
    "fruits_gateway_in_flight", "Uploads the gateway is working on (bounded by FRUITS_GATEWAY_MAX_IN_FLIGHT)."
)
GATEWAY_SSE_CLIENTS = Gauge("fruits_gateway_sse_clients", "Open event streams (GET /v1/photos/{id}/events).")
FEEDBACK = Counter(
    "fruits_feedback_total",
    "Users' verdicts on their answers, by predicted fruit type and verdict (right, wrong): agreement per type.",
    ["fruit_type", "verdict"],
)


def serve_metrics(stage: str, port: int, host: str = "127.0.0.1") -> int:
    """Serve /metrics for this process on ``host:port`` (port 0 = the stage's default); returns the port."""
    chosen = port or STAGE_PORTS.get(stage, 9100)
    start_http_server(chosen, addr=host)
    return chosen


class StageMetrics:
    """The stage loop's metrics; this base records nothing (FRUITS_METRICS_ENABLED=false):
    every call returns at once, so the loop's cost can be measured without them."""

    def __init__(self, stage: str) -> None:
        self.stage = stage

    def consumed(self, count: int) -> None:
        pass

    def processed(self, produced: int, seconds: float, timestamps_ms: Iterable[int], now: float) -> None:
        """One batch done: ``produced`` outputs in ``seconds``; ``timestamps_ms`` are the
        Kafka timestamps of its input records, ``now`` the Unix time the outputs were produced."""

    def dead_letter(self, reason: str) -> None:
        pass

    def transaction(self, records: int, committed: bool) -> None:
        pass

    def kafka_statistics(self, stats_json: str) -> None:
        pass

    def retry(self, cause: str, waited_seconds: float = 0.0) -> None:
        """One retry after an error of ``cause`` (kafka, dependency, transform), after waiting that long."""

    def rebalance(self, event: str) -> None:
        """A rebalance callback ran: ``event`` is assigned, revoked or lost."""

    def committed_outputs(self, produced_at: Sequence[float], committed_at: float) -> None:
        """A transaction committed at ``committed_at`` its outputs produced at ``produced_at`` (Unix times)."""

    def hops(self, seconds: dict[tuple[str, str], float]) -> None:
        """One output's hop times, ``(stage, part) → seconds`` (``core.hops.hop_seconds``)."""


class PrometheusStageMetrics(StageMetrics):
    """The stage loop's metrics with the stage's label values bound once."""

    def __init__(self, stage: str, output_topic: str) -> None:
        super().__init__(stage)
        self._consumed = RECORDS_CONSUMED.labels(stage)
        self._produced = RECORDS_PRODUCED.labels(stage, output_topic)
        self._processing = BATCH_PROCESSING_SECONDS.labels(stage)
        self._batch_size = BATCH_SIZE.labels(stage)
        self._latency = STAGE_LATENCY_SECONDS.labels(stage)
        self._committed = TRANSACTIONS.labels(stage, "committed")
        self._aborted = TRANSACTIONS.labels(stage, "aborted")
        self._commit_wait = COMMIT_WAIT_SECONDS.labels(stage)
        self._hops: dict[tuple[str, str], Any] = {}
        self._lag_partitions: set[tuple[str, str]] = set()

    def consumed(self, count: int) -> None:
        self._consumed.inc(count)

    def processed(self, produced: int, seconds: float, timestamps_ms: Iterable[int], now: float) -> None:
        if produced:
            self._produced.inc(produced)
        self._processing.observe(seconds)
        observe = self._latency.observe
        for timestamp_ms in timestamps_ms:
            if timestamp_ms > 0:  # 0 or -1: the record has no timestamp
                observe(now - timestamp_ms / 1000)

    def dead_letter(self, reason: str) -> None:
        DEAD_LETTERS.labels(self.stage, reason).inc()

    def transaction(self, records: int, committed: bool) -> None:
        self._batch_size.observe(records)
        (self._committed if committed else self._aborted).inc()

    def retry(self, cause: str, waited_seconds: float = 0.0) -> None:
        RETRIES.labels(self.stage, cause).inc()
        if waited_seconds > 0:
            RETRY_WAIT_SECONDS.labels(self.stage, cause).inc(waited_seconds)

    def rebalance(self, event: str) -> None:
        REBALANCES.labels(self.stage, event).inc()

    def committed_outputs(self, produced_at: Sequence[float], committed_at: float) -> None:
        observe = self._commit_wait.observe
        for produced in produced_at:
            observe(committed_at - produced)

    def hops(self, seconds: dict[tuple[str, str], float]) -> None:
        for key, value in seconds.items():
            if (child := self._hops.get(key)) is None:
                child = self._hops[key] = HOP_SECONDS.labels(*key)
            child.observe(value)

    def kafka_statistics(self, stats_json: str) -> None:
        """librdkafka's ``stats_cb``: consumer lag of each assigned partition; the series of
        partitions no longer reported (revoked) are dropped."""
        try:
            lags = consumer_lags(json.loads(stats_json))
        except (ValueError, AttributeError, TypeError) as exc:  # never let a stats hiccup stop the stage
            log.warning("%s: unreadable librdkafka statistics: %s", self.stage, exc)
            return
        for topic, partition in self._lag_partitions - lags.keys():
            CONSUMER_LAG.remove(self.stage, topic, partition)
        for (topic, partition), lag in lags.items():
            CONSUMER_LAG.labels(self.stage, topic, partition).set(lag)
        self._lag_partitions = set(lags)


def stage_metrics(stage: str, output_topic: str, enabled: bool = True) -> StageMetrics:
    return PrometheusStageMetrics(stage, output_topic) if enabled else StageMetrics(stage)


def consumer_lags(stats: dict[str, Any]) -> dict[tuple[str, str], int]:
    """``(topic, partition) → lag`` of the assigned partitions in a librdkafka statistics
    object. The lag is ``consumer_lag_stored``: the partition's end (last stable offset,
    read_committed) minus the consumer's position (offsets are stored as records reach the
    stage). librdkafka's ``consumer_lag`` counts from the offset this consumer committed,
    which a transactional stage never updates (its offsets are committed by the producer,
    ``send_offsets_to_transaction``), so it is used only before the first record, when the
    committed offset fetched at assignment is still the position. A transaction marker
    occupies an offset, so a caught-up partition may show a lag of 1."""
    lags: dict[tuple[str, str], int] = {}
    for topic, topic_stats in stats.get("topics", {}).items():
        for partition, p in topic_stats.get("partitions", {}).items():
            if partition == "-1" or p.get("fetch_state") in (None, "none", "stopped"):
                continue  # librdkafka's internal partition, or one not assigned to this consumer
            lag = p.get("consumer_lag_stored", -1)
            if lag < 0:
                lag = p.get("consumer_lag", -1)
            if lag >= 0:
                lags[(topic, partition)] = lag
    return lags


def version_created_at(version: str) -> float | None:
    """Unix time encoded in a bundle version ``YYYYMMDDTHHMMSSZ-xxxx``; None if it has none."""
    try:
        return datetime.strptime(version.split("-", 1)[0], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None


class ModelMetrics:
    """The model versions a stage uses: one ``fruits_model_info`` series per (stage, kind),
    replaced when the version changes. Cheap to call per batch: it acts only on a change."""

    def __init__(self, stage: str, enabled: bool = True) -> None:
        self.stage = stage
        self.enabled = enabled
        self.versions: dict[str, str] = {}

    def use(self, kind: str, version: str) -> bool:
        """Record that ``kind`` (pca, classifier, featurizer) is at ``version``; True if it changed."""
        old = self.versions.get(kind)
        if not self.enabled or old == version:
            return False
        if old is not None:
            MODEL_INFO.remove(self.stage, kind, old)
        MODEL_INFO.labels(self.stage, kind, version).set(1)
        created = version_created_at(version)
        if created is not None:
            MODEL_CREATED.labels(self.stage, kind).set(created)
        else:
            try:
                MODEL_CREATED.remove(self.stage, kind)
            except KeyError:
                pass
        self.versions[kind] = version
        return True

    def use_pca(self, version: str, explained_variance_ratio: Sequence[float]) -> None:
        if self.use("pca", version):
            PCA_EXPLAINED_VARIANCE.set(float(sum(explained_variance_ratio)))
            PCA_COMPONENTS.set(len(explained_variance_ratio))


class PredictionMetrics:
    """What predict adds: end-to-end latency, predicted class and type counts (and how many
    were unsure), confidence."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._classes: dict[str, Any] = {}
        self._types: dict[tuple[str, str], Any] = {}

    def observe(self, predictions: Iterable[Prediction], now: datetime) -> None:
        if not self.enabled:
            return
        labels: Tally[str] = Tally()
        types: Tally[tuple[str, str]] = Tally()
        latency = END_TO_END_SECONDS.observe
        confidence = PREDICTION_CONFIDENCE.observe
        for prediction in predictions:
            latency((now - prediction.photo.received_at).total_seconds())
            confidence(prediction.confidence)
            labels[prediction.label] += 1
            types[(prediction.fruit_type or "none", "true" if prediction.unsure else "false")] += 1
        for label, count in labels.items():
            if (child := self._classes.get(label)) is None:
                child = self._classes[label] = PREDICTIONS.labels(label)
            child.inc(count)
        for key, count in types.items():
            if (child := self._types.get(key)) is None:
                child = self._types[key] = PREDICTED_TYPES.labels(*key)
            child.inc(count)

"""Prometheus metrics shared by every Fruits! process.

Metrics are module-level objects in the default registry (created once, on import);
each process serves them on its own port with ``serve_metrics``. Labels are bounded:
stage, topic, reason, outcome — never photo or user ids.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

STAGE_PORTS = {"ingest": 9101, "preprocess": 9102, "featurize": 9103, "reduce": 9104, "predict": 9105}
"""Default /metrics port of each service (overridden by FRUITS_METRICS_PORT)."""

RECORDS_CONSUMED = Counter(
    "fruits_records_consumed_total", "Records read from the stage's input topic.", ["stage"]
)
RECORDS_PRODUCED = Counter(
    "fruits_records_produced_total", "Records written by the stage, per topic.", ["stage", "topic"]
)
DEAD_LETTERS = Counter(
    "fruits_dead_letters_total", "Records sent to the dead-letter topic, per reason.", ["stage", "reason"]
)
TRANSACTIONS = Counter(
    "fruits_transactions_total", "Kafka transactions, by outcome (committed, aborted).", ["stage", "outcome"]
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
END_TO_END_SECONDS = Histogram(
    "fruits_end_to_end_latency_seconds",
    "From the photo event's Kafka timestamp to its prediction.",
    buckets=(0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10),
)
MODEL_VERSION = Gauge(
    "fruits_model_info", "Model versions in use by this process (value is always 1).", ["stage", "kind", "version"]
)


def serve_metrics(stage: str, port: int) -> int:
    """Serve /metrics for this process on ``port`` (0 = the stage's default); returns the port."""
    chosen = port or STAGE_PORTS.get(stage, 9100)
    start_http_server(chosen, addr="127.0.0.1")
    return chosen

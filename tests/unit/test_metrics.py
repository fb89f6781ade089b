"""The shared metrics module: lag from librdkafka statistics, model version series,
the disabled switch, and Prometheus naming conventions."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from prometheus_client import REGISTRY, generate_latest

from core import metrics
from core.records import ModelVersions, PhotoRef, Prediction


def prediction(received_at: datetime, confidence: float, label: str) -> Prediction:
    photo = PhotoRef("p", "u", received_at, received_at, "eu", "s3://b/k")
    return Prediction(photo, received_at, label, confidence, [], ModelVersions("f", "v", "v"))


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def stats(partitions: dict[str, int], topic: str = "fruits.test") -> str:
    return json.dumps({
        "name": "rdkafka#consumer-1",
        "topics": {topic: {"topic": topic, "partitions": {
            **{p: {"partition": int(p), "fetch_state": "active", "consumer_lag": -1, "consumer_lag_stored": lag}
               for p, lag in partitions.items()},
            "9": {"partition": 9, "fetch_state": "none", "consumer_lag": 3, "consumer_lag_stored": 3},
            "-1": {"partition": -1, "fetch_state": "none", "consumer_lag": -1, "consumer_lag_stored": -1},
        }}},
    })  # fmt: skip


def test_consumer_lag_per_partition_from_statistics_drops_revoked_partitions():
    stage = metrics.stage_metrics("lagtest", "out")
    stage.kafka_statistics(stats({"0": 5, "1": 0, "2": -1}))
    assert sample("fruits_consumer_lag_records", stage="lagtest", topic="fruits.test", partition="0") == 5
    assert sample("fruits_consumer_lag_records", stage="lagtest", topic="fruits.test", partition="1") == 0
    assert sample("fruits_consumer_lag_records", stage="lagtest", topic="fruits.test", partition="2") is None
    assert sample("fruits_consumer_lag_records", stage="lagtest", topic="fruits.test", partition="-1") is None
    assert sample("fruits_consumer_lag_records", stage="lagtest", topic="fruits.test", partition="9") is None
    stage.kafka_statistics(stats({"1": 7}))
    assert sample("fruits_consumer_lag_records", stage="lagtest", topic="fruits.test", partition="0") is None
    assert sample("fruits_consumer_lag_records", stage="lagtest", topic="fruits.test", partition="1") == 7
    stage.kafka_statistics("not json")  # logged, not raised


def test_lag_before_the_first_record_counts_from_the_committed_offset():
    partition = {"fetch_state": "active", "consumer_lag": 4, "consumer_lag_stored": -1}
    assert metrics.consumer_lags({"topics": {"t": {"partitions": {"0": partition}}}}) == {("t", "0"): 4}


def test_stage_metrics_count_per_batch():
    stage = metrics.stage_metrics("batchtest", "out.topic")
    now = 1_000_000.0
    stage.consumed(3)
    stage.processed(2, 0.004, [int((now - 0.02) * 1000), int((now - 0.2) * 1000), 0], now)
    stage.dead_letter("bad_thing")
    stage.transaction(3, committed=True)
    stage.transaction(3, committed=False)
    assert sample("fruits_records_consumed_total", stage="batchtest") == 3
    assert sample("fruits_records_produced_total", stage="batchtest", topic="out.topic") == 2
    assert sample("fruits_dead_letters_total", stage="batchtest", reason="bad_thing") == 1
    assert sample("fruits_stage_latency_seconds_count", stage="batchtest") == 2  # the record without timestamp skipped
    assert sample("fruits_stage_latency_seconds_bucket", stage="batchtest", le="0.025") == 1
    assert sample("fruits_batch_processing_seconds_count", stage="batchtest") == 1
    assert sample("fruits_batch_size_records_count", stage="batchtest") == 2
    assert sample("fruits_transactions_total", stage="batchtest", outcome="committed") == 1
    assert sample("fruits_transactions_total", stage="batchtest", outcome="aborted") == 1


def test_disabled_metrics_record_nothing():
    stage = metrics.stage_metrics("offtest", "out", enabled=False)
    stage.consumed(3)
    stage.processed(3, 0.1, [1000, 2000], 3.0)
    stage.dead_letter("x")
    stage.transaction(3, committed=True)
    stage.kafka_statistics(stats({"0": 5}))
    models = metrics.ModelMetrics("offtest", enabled=False)
    models.use("pca", "20260101T000000Z-abcdef")
    metrics.PredictionMetrics(enabled=False).observe(
        [prediction(datetime.now(timezone.utc), 0.9, "Off 1")], datetime.now(timezone.utc)
    )
    text = generate_latest().decode()
    assert 'stage="offtest"' not in text and 'label="Off 1"' not in text


def test_model_info_keeps_one_series_per_kind_and_exports_creation_time():
    models = metrics.ModelMetrics("versiontest")
    models.use_pca("20260101T000000Z-aaaaaa", [0.5, 0.25])
    assert sample("fruits_model_info", stage="versiontest", kind="pca", version="20260101T000000Z-aaaaaa") == 1
    created = datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()
    assert sample("fruits_model_created_timestamp_seconds", stage="versiontest", kind="pca") == created
    assert sample("fruits_pca_explained_variance_ratio") == 0.75
    assert sample("fruits_pca_components") == 2
    assert not models.use("pca", "20260101T000000Z-aaaaaa")  # unchanged: nothing to do
    assert models.use("pca", "20260102T120000Z-bbbbbb")
    assert sample("fruits_model_info", stage="versiontest", kind="pca", version="20260101T000000Z-aaaaaa") is None
    assert sample("fruits_model_info", stage="versiontest", kind="pca", version="20260102T120000Z-bbbbbb") == 1
    assert sample("fruits_model_created_timestamp_seconds", stage="versiontest", kind="pca") == created + 36 * 3600
    models.use("featurizer", "mobilenetv2_100px@1234")  # no time in it: no creation gauge
    assert sample("fruits_model_created_timestamp_seconds", stage="versiontest", kind="featurizer") is None


def test_version_created_at():
    assert metrics.version_created_at("19700101T000010Z-0a0b0c") == 10.0
    assert metrics.version_created_at("custom") is None


def test_prediction_metrics_count_classes_and_confidence():
    now = datetime.now(timezone.utc)
    before = sample("fruits_end_to_end_latency_seconds_count") or 0
    predictions = [
        prediction(now - timedelta(milliseconds=40), c, label)
        for c, label in ((0.97, "Pear 1"), (0.3, "Pear 1"), (0.8, "Fig 1"))
    ]
    metrics.PredictionMetrics().observe(predictions, now)
    assert sample("fruits_predictions_total", label="Pear 1") == 2
    assert sample("fruits_predictions_total", label="Fig 1") == 1
    assert sample("fruits_prediction_confidence_bucket", le="0.5") >= 1
    assert sample("fruits_end_to_end_latency_seconds_count") == before + 3


def test_names_follow_prometheus_conventions_and_process_metrics_are_exported():
    text = generate_latest().decode()
    for family in REGISTRY.collect():
        if not family.name.startswith("fruits_"):
            continue
        if family.type == "counter":
            assert f"{family.name}_total" in text, family.name
        if family.type == "histogram" and ("latency" in family.name or "processing" in family.name):
            assert family.name.endswith("_seconds"), family.name
        for sample_ in family.samples:
            assert not {"photo_id", "user_id"} & set(sample_.labels), family.name
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes"):
        assert f"\n{name} " in text, name

"""The Spark jobs' pure steps on a local SparkSession (no Kafka, no S3): Avro decoding,
lake rows, the replay-overwrites write, and the streaming PCA statistics against a
batch PCA of the same features."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from core.avro import DEAD_LETTER, PHOTO_FEATURES, avro_type
from core.featurizer import Featurizer
from core.lake import training_features_table
from core.model import NOT_OURS
from core.recipe import TrainingRows
from core.settings import PROJECT_ROOT, Settings
from core.datasets import list_images
from training.trainer import featurize_files
from spark import transforms
from spark.pca_update import PcaUpdater, StateStore, read_labelled_features
from spark.session import spark_session
from spark.streaming_job import overwrite_partitions
from tests.unit.test_pca_update import MemoryFiles, RecordingPublisher

pytestmark = pytest.mark.integration

DATA = PROJECT_ROOT.parent / "shared" / "data" / "fruits360"
KAFKA_SCHEMA = "key binary, value binary, topic string, partition int, offset long, timestamp timestamp"
WHEN = datetime(2026, 11, 26, 23, 59, 59, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def spark() -> Iterator:
    session = spark_session(Settings(spark_master="local[2]"), "fruits-tests")
    yield session
    session.stop()


def features_record(index: int, vector: list[float], featurizer_id: str = "f@1") -> dict:
    return {
        "photo_id": f"p{index}", "user_id": "u", "captured_at": WHEN, "received_at": WHEN, "region": "eu",
        "original_uri": f"s3://b/{index}.jpg", "featurizer_id": featurizer_id, "features": vector,
    }  # fmt: skip


def kafka_rows(spark, values: list[bytes], first_offset: int = 0):
    rows = [(b"k", bytearray(v), "fruits.features", 1, first_offset + i, WHEN) for i, v in enumerate(values)]
    return spark.createDataFrame(rows, KAFKA_SCHEMA)


def test_decode_splits_good_records_from_each_kind_of_bad_one(spark):
    good = avro_type(PHOTO_FEATURES).encode(features_record(0, [0.5, 1.5]))
    foreign = avro_type(DEAD_LETTER).header + good[10:]
    values = [good, b"", b"{json}" + good, foreign, good[:10] + b"\xff\xff\xff\xff"]
    decoded = transforms.decode_kafka(kafka_rows(spark, values), PHOTO_FEATURES)
    errors = [row[transforms.ERROR] for row in decoded.orderBy("kafka_offset").collect()]
    assert errors == [None, "empty_record", "not_avro_single_object", "foreign_schema", "corrupt_avro"]

    (row,) = transforms.lake_rows(decoded).collect()
    assert row["photo_id"] == "p0" and row["features"] == [0.5, 1.5] and row["date"] == date(2026, 11, 26)
    assert (row["kafka_partition"], row["kafka_offset"]) == (1, 0)
    assert row["received_at"].replace(tzinfo=timezone.utc) == WHEN or row["received_at"] == WHEN.replace(tzinfo=None)

    rejected = transforms.rejected_rows(decoded).orderBy("kafka_offset").collect()
    assert [r["kafka_offset"] for r in rejected] == [1, 2, 3, 4]
    assert bytes(rejected[2]["value"]) == foreign and rejected[2]["topic"] == "fruits.features"


def test_a_prediction_of_the_earlier_schema_decodes_to_the_current_columns(spark):
    """The lake job accepts both Prediction versions, like the services (schemas/history/)."""
    from fastavro import schemaless_writer

    from core.avro import HISTORY_DIR, PREDICTION, load_schema_file, single_object_header
    from core.records import ModelVersions, PhotoRef, Prediction, ScoredLabel, encode_record

    v1 = load_schema_file(HISTORY_DIR / "Prediction.v1.avsc")
    old = {"photo_id": "old", "user_id": "u", "captured_at": WHEN, "received_at": WHEN, "predicted_at": WHEN,
           "region": "eu", "original_uri": "s3://b/k", "label": "Kiwi 1", "confidence": 0.5,
           "top5": [{"label": "Kiwi 1", "confidence": 0.5}],
           "model_versions": {"featurizer_id": "f", "pca_version": "v", "classifier_version": "v"}, "fruit": None}
    written = io.BytesIO()
    written.write(single_object_header(v1))
    schemaless_writer(written, v1, old)
    new = Prediction(PhotoRef("new", "u", WHEN, WHEN, "eu", "s3://b/n"), WHEN, "Kiwi 1", 0.9,
                     [ScoredLabel("Kiwi 1", 0.9)], ModelVersions("f", "v", "v"), fruit_type="kiwi",
                     type_confidence=0.9, top5_types=[ScoredLabel("kiwi", 0.9)], unsure=False)
    decoded = transforms.decode_kafka(kafka_rows(spark, [written.getvalue(), encode_record(new)]), PREDICTION)
    rows = {row["photo_id"]: row for row in transforms.lake_rows(decoded).collect()}
    assert set(rows) == {"old", "new"}, decoded.select(transforms.ERROR).collect()
    assert rows["old"]["fruit_type"] is None and rows["old"]["unsure"] is False and rows["old"]["top5_types"] == []
    assert rows["new"]["fruit_type"] == "kiwi" and rows["new"]["top5_types"][0]["label"] == "kiwi"


def test_a_replayed_batch_overwrites_its_own_partitions(spark, tmp_path: Path):
    values = [avro_type(PHOTO_FEATURES).encode(features_record(i, [float(i)])) for i in range(6)]
    table = tmp_path / "features"

    def write(batch_id: int, rows: list[bytes], first_offset: int) -> None:
        decoded = transforms.decode_kafka(kafka_rows(spark, rows, first_offset), PHOTO_FEATURES)
        overwrite_partitions(transforms.with_batch_id(transforms.lake_rows(decoded), batch_id), str(table), ("date",))

    write(0, values[:3], 0)
    write(1, values[3:], 3)
    write(1, values[3:], 3)  # batch 1 again, as after a crash before its commit
    data = ds.dataset(table, format="parquet", partitioning="hive").to_table().to_pylist()
    assert sorted(row["photo_id"] for row in data) == [f"p{i}" for i in range(6)]
    assert {row["batch_id"] for row in data} == {0, 1} and {str(row["date"]) for row in data} == {"2026-11-26"}


@pytest.fixture(scope="module")
def real_features() -> np.ndarray:
    if not (DATA / "Training").is_dir():
        pytest.skip(f"sample dataset not found at {DATA}")
    images = list_images(DATA / "Training", per_class=4)  # 564 photos of 141 classes
    return featurize_files(images.paths, Featurizer(Settings().featurizer_path), "featurize")


def test_streaming_pca_matches_a_batch_pca(spark, real_features: np.ndarray):
    """Statistics of 5 micro-batches (partial sums per partition, merged per batch, saved
    and reloaded between batches) give the PCA a batch fit of all the features gives."""
    featurizer_id = "mobilenet@test"
    settings = Settings(pca_update_rows=10**9)
    updater = PcaUpdater(settings, StateStore(MemoryFiles()), RecordingPublisher(), featurizer_id,
                         transforms.SparkBatchStats(featurizer_id))  # fmt: skip
    state = None
    for batch_id, part in enumerate(np.array_split(real_features, 5)):
        rows = spark.createDataFrame(
            [(featurizer_id, v.tolist()) for v in part], "featurizer_id string, features array<float>"
        ).repartition(3)
        state = updater.update(rows, batch_id)
    assert state is not None and state.stats.count == len(real_features)
    streamed = state.stats.fit(min_explained_variance=1.0, max_components=50)

    x = real_features.astype(np.float64)
    _, singular, vt = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
    cosines = np.abs(np.sum(streamed.components.astype(np.float64) * vt[:50], axis=1))
    assert cosines.min() >= 0.999, f"lowest |cos| {cosines.min():.5f} at component {cosines.argmin()}"
    ratio = singular**2 / (singular**2).sum()
    np.testing.assert_allclose(streamed.explained_variance_ratio, ratio[:50], rtol=1e-4)


def test_publisher_reads_labelled_features_written_by_the_local_trainer(spark, tmp_path: Path):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    folder = tmp_path / "training_features" / "version=v1"
    folder.mkdir(parents=True)
    rows = TrainingRows(["a", "b", NOT_OURS], ["apple", "pear", NOT_OURS], ["fruits360", "grocerystore", "empty"],
                        ["1", "2", "3"])  # fmt: skip
    pq.write_table(training_features_table(x, rows, "f@1"), folder / "part-0.parquet")
    labelled = read_labelled_features(spark, str(folder))
    assert labelled.featurizer_id == "f@1" and labelled.rows == rows
    np.testing.assert_array_equal(labelled.features, x)

"""The Spark streaming job on real Kafka, real SeaweedFS and Spark local[2]: feature,
reduced and prediction records of N photos land in the Parquet lake exactly once, even
when the job is SIGKILLed and restarted mid-stream, and so do users' feedback records; the
job publishes a new PCA (with a classifier retrained for it) and the running reduce service
switches to it. A real Prometheus scrapes the driver: every Spark dashboard panel has data."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Producer

from core import lake
from core.avro import PHOTO_FEATURES, avro_type
from core.featurizer import model_id
from core.kafka import producer_config
from core.manifest import Manifest, TrainedOn
from core.recipe import TrainingRows
from core.records import Feedback, ModelVersions, encode_record
from core.model import ModelBundle, ModelStore, PcaStats, new_version
from tools.services import free_port_offset, start_service, stop_service, wait_ready
from core.s3 import s3_client
from core.settings import PROJECT_ROOT, Settings, get_settings
from tools.stack import provision_servers
from tools.stack.supervisor import free_port_block
from core.model import fit_classifier
from tests.integration import as_identity
from tests.integration.prometheus import panel_queries, report, running_prometheus, without_data

pytestmark = pytest.mark.integration

N = 60  # photos; the job refits the PCA after the first half
CLASSES = ("Banana 1", "Kiwi 1", "Lemon 1", "Strawberry 1")
DIM = 1280
JOB_START_TIMEOUT_S = 300.0  # four queries starting on local[2], on a busy machine


def synthetic_features(rng: np.random.Generator, labels: list[str], centres: np.ndarray) -> np.ndarray:
    """Separable classes: a centre per class, plus noise (non-negative, like ReLU6 features)."""
    index = np.array([CLASSES.index(label) for label in labels])
    return np.clip(centres[index] + rng.normal(0, 0.5, (len(labels), DIM)), 0, None).astype(np.float32)


@pytest.fixture(scope="module")
def settings(stack: Settings) -> Iterator[Settings]:
    """Topics, model bucket and lake prefix of this module alone: nothing another test wrote is counted.
    Provisioned like `python -m tools.stack provision` does: the stack's identities get their rights
    on the new model bucket (the job runs as ``spark``, the services as themselves); the test
    itself sets up and inspects as ``admin``."""
    run = uuid.uuid4().hex[:6]
    overrides = {
        "FRUITS_TOPIC_FEATURES": f"sparktest-{run}.features",
        "FRUITS_TOPIC_REDUCED": f"sparktest-{run}.reduced",
        "FRUITS_TOPIC_PREDICTIONS": f"sparktest-{run}.predictions",
        "FRUITS_TOPIC_FEEDBACK": f"sparktest-{run}.feedback",
        "FRUITS_TOPIC_DEAD_LETTER": f"sparktest-{run}.dead-letter",
        "FRUITS_MODEL_BUCKET": f"sparktest-{run}-models",
        "FRUITS_LAKE_PREFIX": f"sparktest-{run}",
        "FRUITS_INSTANCE_ID": f"sparktest-{run}",
        "FRUITS_MODEL_REFRESH_SECONDS": "1",
        "FRUITS_LAKE_TRIGGER_SECONDS": "2",
        "FRUITS_PCA_UPDATE_ROWS": str(N // 2),
        "FRUITS_SPARK_DRIVER_MEMORY": "1g",
    }
    with pytest.MonkeyPatch.context() as env:
        for name, value in overrides.items():
            env.setenv(name, value)
        get_settings.cache_clear()
        settings = as_identity(get_settings(), "admin")
        provision_servers(settings)  # topics, their ACLs, and the identities' rights on the new bucket
        yield settings
    get_settings.cache_clear()


class SparkJob:
    """``python -m spark.streaming_job`` in its own process group (Python driver + JVM)."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.metrics_port = free_port_block(1)

    def metrics(self) -> str:
        """The driver's /metrics page."""
        return urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "spark.streaming_job"],
                stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT, start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1", "FRUITS_METRICS_PORT": str(self.metrics_port)},
            )  # fmt: skip

    def kill(self) -> None:
        """SIGKILL the driver and its JVM at once: a crash, no shutdown hook runs."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)  # the driver stops its queries, then its JVM
        try:
            self.process.wait(90)
        except subprocess.TimeoutExpired:
            pass
        try:  # whatever of the group is left (normally nothing)
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            pytest.fail(f"the streaming job exited with {self.process.returncode}:\n{self.log()[-4000:]}")


def wait_for(what: str, condition, timeout: float, job: SparkJob | None = None, every: float = 2.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if job is not None:
            job.check_alive()
        if result := condition():
            return result
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}" + (f"\n{job.log()[-4000:]}" if job else ""))


def row_count(settings: Settings, table: str) -> int:
    data = lake.read_table(settings.acting_as("admin"), table, columns=["photo_id"])
    return 0 if data is None else data.num_rows


def send_feedback(settings: Settings, photo_ids: list[str]) -> list[Feedback]:
    """A verdict on each photo, as the gateway writes them (as admin here: the test plays it)."""
    versions = ModelVersions(featurizer_id="f", pca_version="p", classifier_version="c")
    records = [
        Feedback(
            photo_id=photo_id, user_id="spark-test", region="eu", given_at=datetime.now(timezone.utc),
            original_uri=f"s3://fruits-photos-eu/originals/{photo_id}.jpg", predicted_label="Kiwi 1",
            predicted_type="kiwi", correct=index % 2 == 0, corrected_type=None if index % 2 == 0 else "lemon",
            model_versions=versions,
        )
        for index, photo_id in enumerate(photo_ids)
    ]  # fmt: skip
    producer = Producer(producer_config(settings, **{"enable.idempotence": True}))
    for record in records:
        producer.produce(settings.topic_feedback, key=record.photo_id.encode(), value=encode_record(record))
    assert producer.flush(30) == 0, "feedback records not delivered"
    return records


def test_lake_exactly_once_and_live_pca_hot_swap(settings: Settings, tmp_path: Path) -> None:
    admin = settings.acting_as("admin")
    rng = np.random.default_rng(7)
    centres = rng.uniform(0, 3, (len(CLASSES), DIM))
    featurizer_id = model_id(settings.featurizer_path)
    client = s3_client(admin)
    store = ModelStore(client, settings.model_bucket)

    # The labelled training set and the first bundle, as `fruits train` makes them.
    train_labels = [label for label in CLASSES for _ in range(40)]
    train_x = synthetic_features(rng, train_labels, centres)
    v0 = new_version()
    rows = TrainingRows.of_specimens(train_labels, [f"synthetic/{i}" for i in range(len(train_x))])
    training_uri = lake.write_training_features(client, settings, v0, train_x, rows, featurizer_id)
    stats = PcaStats.empty(DIM)
    stats.add(train_x)
    pca = stats.fit(0.98)
    bundle = ModelBundle(v0, featurizer_id, pca, fit_classifier(pca.transform(train_x), train_labels))
    trained_on = TrainedOn("local", "synthetic", len(train_labels), len(CLASSES))
    store.save(replace(bundle, manifest=Manifest.describe(
        bundle, trained_on=trained_on, min_explained_variance=0.98, training_seconds=0.0, training_features=training_uri,
    )))  # fmt: skip

    labels = [CLASSES[i % len(CLASSES)] for i in range(N)]
    features = synthetic_features(rng, labels, centres)
    photo_ids = [f"spark-{uuid.uuid4().hex[:12]}" for _ in range(N)]
    label_of = dict(zip(photo_ids, labels))
    feature_type = avro_type(PHOTO_FEATURES)
    # Playing the featurize service, which writes this topic.
    producer = Producer(producer_config(as_identity(settings, "featurize"), **{"enable.idempotence": True}))

    def send(index: int) -> None:
        now = datetime.now(timezone.utc)
        producer.produce(settings.topic_features, key=photo_ids[index].encode(), value=feature_type.encode({
            "photo_id": photo_ids[index], "user_id": "spark-test", "captured_at": now, "received_at": now,
            "region": "eu", "original_uri": f"s3://fruits-photos-eu/originals/{photo_ids[index]}.jpg",
            "featurizer_id": featurizer_id, "features": features[index].tolist(),
        }))  # fmt: skip
        producer.poll(0)

    logs = tmp_path / "logs"
    offset = free_port_offset(300)  # apart from the other tests' services, a running demo, another checkout's tests
    services = {name: start_service(name, logs, port_offset=offset) for name in ("reduce", "predict")}
    job = SparkJob(tmp_path / "streaming_job.log")
    (tmp_path / "prometheus").mkdir()
    cleanup = ExitStack()
    try:
        prometheus_url = cleanup.enter_context(running_prometheus(
            tmp_path / "prometheus",
            lambda service, port: job.metrics_port if service == "spark" else port + offset,
        ))  # fmt: skip
        for service in services.values():
            wait_ready(service)
        job.start()
        half = N // 2
        for index in range(half):
            send(index)
        producer.flush(30)
        feedback = send_feedback(admin, photo_ids[:4])

        # The job counts the first half, refits the PCA and publishes it with a retrained classifier.
        v1 = wait_for("a PCA published by the streaming job",
                      lambda: (v := store.current_version()) != v0 and v, JOB_START_TIMEOUT_S, job)  # fmt: skip
        manifest = store.load_manifest(v1)
        assert manifest.pca.stream.topic == settings.topic_features and manifest.pca.stream.rows == half
        assert manifest.trained_on.engine == "streaming" and manifest.trained_on.source == training_uri
        assert manifest.training_features == training_uri
        assert 0.98 <= manifest.pca.explained_variance <= 1.0
        assert manifest.parent_version == v0
        # Through the trainers' recipe: calibrated, validated out of fold on the labelled set.
        assert manifest.calibration is not None and manifest.validation.images == len(train_labels)
        wait_for("the first half in the lake", lambda: row_count(settings, lake.PREDICTIONS) >= half, 120, job)

        # Second half, with the job SIGKILLed in the middle of writing a micro-batch
        # (its offsets are logged, its output partly written), then restarted.
        for index in range(half, N):
            send(index)
            producer.flush(10)
            time.sleep(0.25)
            if index == half + 10:
                started = f"{settings.topic_features}: batch 1: started"
                wait_for("the next micro-batch", lambda: started in job.log(), 60, job, every=0.1)
                time.sleep(1.0)
                job.kill()
                job.start()
        producer.flush(30)

        def all_landed() -> bool:
            return all(row_count(settings, t) >= N for t in (lake.FEATURES, lake.REDUCED, lake.PREDICTIONS))

        wait_for("all rows in the three tables after the restart", all_landed, JOB_START_TIMEOUT_S, job)
        # The second half is due for another refit: its statistics count every row once,
        # the batch replayed after the kill included.
        v2 = wait_for("the second PCA", lambda: (v := store.current_version()) not in (v0, v1) and v, 120, job)
        job.check_alive()
        # The restarted driver's /metrics; it records the PCA just after publishing it.
        driver_metrics = wait_for("the driver's PCA metrics", lambda: v2 in (page := job.metrics()) and page, 30, job)
        wait_for("the feedback in the lake", lambda: row_count(settings, lake.FEEDBACK) >= len(feedback), 60, job)
        empty = without_data(prometheus_url, panel_queries("spark"))
        assert not empty, report(empty)
    finally:
        job.stop()
        cleanup.close()
        for service in services.values():
            stop_service(service)

    assert job.process is not None and job.process.returncode == 0, f"unclean stop:\n{job.log()[-3000:]}"
    for table in (lake.FEATURES, lake.REDUCED, lake.PREDICTIONS):
        data = lake.read_table(admin, table).to_pylist()
        assert len(data) == N, f"{table}: {len(data)} rows for {N} photos"
        assert sorted(row["photo_id"] for row in data) == sorted(photo_ids), table
        assert all(str(row["date"]) == str(row["received_at"])[:10] for row in data), "date: received_at's UTC day"
    assert lake.read_table(admin, lake.REJECTED) is None
    landed = {row["photo_id"]: row for row in lake.read_table(admin, lake.FEEDBACK).to_pylist()}
    assert len(landed) == len(feedback) == lake.read_table(admin, lake.FEEDBACK).num_rows
    for record in feedback:
        row = landed[record.photo_id]
        assert (row["correct"], row["corrected_type"], row["predicted_type"]) == (
            record.correct, record.corrected_type, record.predicted_type
        )
        assert str(row["date"]) == record.given_at.strftime("%Y-%m-%d"), "date: given_at's UTC day"

    reduced = {row["photo_id"]: row for row in lake.read_table(admin, lake.REDUCED).to_pylist()}
    later = photo_ids[half:]
    assert {reduced[p]["pca_version"] for p in later} == {v1}, "reduce did not switch to the streamed PCA"
    assert {len(reduced[p]["features"]) for p in later} == {manifest.pca.k}

    predictions = {row["photo_id"]: row for row in lake.read_table(admin, lake.PREDICTIONS).to_pylist()}
    assert {predictions[p]["model_versions"]["classifier_version"] for p in later} == {v1}
    right = sum(predictions[p]["label"] == label_of[p] for p in later)
    assert right >= 0.9 * len(later), f"{right}/{len(later)} right with the streamed PCA's bundle"
    keys = [o["Key"] for o in client.list_objects_v2(
        Bucket=settings.lake_bucket, Prefix=lake.lake_key(settings, lake.PREDICTIONS) + "/")["Contents"]]  # fmt: skip
    assert any("/label=Kiwi 1/" in key for key in keys), keys[:5]
    assert store.load_manifest(v2).pca.stream.rows == N
    # The restarted driver's metrics: progress of the queries it got data for, rows written, the
    # PCA it published (the feedback landed before the kill: in the first driver's metrics).
    for query in ("lake-features", "lake-reduced", "lake-predictions"):
        assert f'fruits_spark_batch_duration_seconds_count{{query="{query}"}}' in driver_metrics, query
    written = re.findall(r'fruits_spark_rows_written_total\{table="(\w+)"\} (\S+)', driver_metrics)
    assert {table for table, value in written if float(value) > 0} == {"features", "reduced", "predictions"}, written
    assert f'fruits_model_info{{kind="pca",stage="spark",version="{v2}"}} 1.0' in driver_metrics
    explained = re.search(r"^fruits_pca_explained_variance_ratio (\S+)$", driver_metrics, re.M)
    assert explained and float(explained.group(1)) == pytest.approx(store.load_manifest(v2).pca.explained_variance)
    # The killed micro-batch was not committed: the restarted job ran it again.
    assert job.log().count(f"{settings.topic_features}: batch 1: started") == 2, job.log()[-4000:]

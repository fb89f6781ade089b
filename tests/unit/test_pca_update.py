"""The streaming job's PCA update without Spark: state keyed by batchId (a replayed batch
is not counted twice), refit triggers, and the pairing policy of the publisher."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
from prometheus_client import REGISTRY
import pytest

from core.evaluation import Evaluation
from core.manifest import BUNDLE_FORMAT, Manifest, PcaStream, TrainedOn
from core.model import ModelBundle, ModelStore, PcaStats, fit_classifier
from core.recipe import TrainingRows
from core.settings import Settings
from spark.pca_update import (
    LabelledFeatures,
    PcaPublisher,
    PcaState,
    PcaUpdater,
    StateStore,
    advance,
    publish_reason,
)
from tests.unit.fakes import MemoryS3

DIM = 8
FEATURIZER = "featurizer@abc"


class MemoryFiles:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def read(self, name: str) -> bytes:
        return self.files[name]

    def write(self, name: str, data: bytes) -> None:
        self.files[name] = data

    def names(self) -> list[str]:
        return list(self.files)

    def delete(self, name: str) -> None:
        del self.files[name]


class NumpyBatchStats:
    """BatchStats over numpy arrays standing in for DataFrames."""

    def dim(self, rows: np.ndarray) -> int | None:
        return rows.shape[1] if len(rows) else None

    def stats(self, rows: np.ndarray, dim: int) -> PcaStats:
        stats = PcaStats.empty(dim)
        stats.add(rows)
        return stats


class RecordingPublisher:
    def __init__(self) -> None:
        self.published: list[int] = []

    def publish(self, state: PcaState) -> str:
        self.published.append(state.stats.count)
        return f"v{len(self.published)}"


def settings(**overrides: object) -> Settings:
    return Settings(**{"pca_update_rows": 100, "pca_update_seconds": 3600.0, **overrides})


def batches(n_batches: int = 5, rows: int = 40, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(rows, DIM)) * np.linspace(3, 0.1, DIM) for _ in range(n_batches)]


def test_state_round_trips_through_bytes():
    stats = PcaStats.empty(DIM)
    stats.add(batches(1)[0])
    state = PcaState(7, FEATURIZER, stats, rows_at_publish=3, published_at=12.5, published_version="v1")
    back = PcaState.from_bytes(state.to_bytes())
    assert (back.batch_id, back.featurizer_id, back.rows_at_publish, back.published_at, back.published_version) == (
        7, FEATURIZER, 3, 12.5, "v1")  # fmt: skip
    assert back.stats.count == stats.count
    np.testing.assert_array_equal(back.stats.total, stats.total)
    np.testing.assert_array_equal(back.stats.outer, stats.outer)


def test_replayed_batch_is_not_counted_twice():
    data = batches()
    clock = iter(range(1000)).__next__
    updater = PcaUpdater(settings(), StateStore(MemoryFiles()), RecordingPublisher(), FEATURIZER, NumpyBatchStats(),
                         clock=lambda: float(clock()))  # fmt: skip
    for batch_id, rows in enumerate(data[:3]):
        updater.update(rows, batch_id)
    # A crash after batch 2's state was saved, before Spark committed it: Spark replays batch 2.
    replayed = updater.update(data[2], 2)
    assert replayed is not None and replayed.stats.count == 3 * 40
    for batch_id, rows in enumerate(data[3:], start=3):
        state = updater.update(rows, batch_id)
    whole = PcaStats.empty(DIM)
    whole.add(np.concatenate(data))
    assert state is not None and state.stats.count == whole.count
    np.testing.assert_allclose(state.stats.outer, whole.outer)


def test_refits_every_n_rows_and_records_the_publication():
    publisher = RecordingPublisher()
    updater = PcaUpdater(settings(pca_update_rows=100), StateStore(MemoryFiles()), publisher, FEATURIZER,
                         NumpyBatchStats(), clock=lambda: 0.0)  # fmt: skip
    states = [updater.update(rows, batch_id) for batch_id, rows in enumerate(batches(6))]
    assert publisher.published == [120, 240]  # after batches 2 and 5 (40 rows each)
    assert states[-1] is not None and states[-1].published_version == "v2" and states[-1].new_rows == 0
    # Saved after publishing: a replay of the last batch does not publish again.
    assert updater.update(batches(6)[5], 5).published_version == "v2"
    assert publisher.published == [120, 240]


def test_publish_reason_rows_or_time():
    stats = PcaStats.empty(DIM)
    stats.add(batches(1, rows=10)[0])
    state = PcaState(0, FEATURIZER, stats, published_at=1000.0)
    assert publish_reason(state, 1001.0, every_rows=100, every_seconds=60) is None
    assert "new rows" in publish_reason(state, 1001.0, every_rows=10, every_seconds=60)
    assert "since the last" in publish_reason(state, 1060.0, every_rows=100, every_seconds=60)
    published = PcaState(0, FEATURIZER, stats, rows_at_publish=10, published_at=0.0)
    assert publish_reason(published, 1e9, every_rows=1, every_seconds=1) is None  # no new row


def test_advance_refuses_going_back():
    state = advance(None, 4, FEATURIZER, PcaStats.empty(DIM), now=0.0)
    with pytest.raises(ValueError):
        advance(state, 4, FEATURIZER, PcaStats.empty(DIM), now=0.0)


def test_state_store_keeps_the_latest_few():
    store = StateStore(MemoryFiles())
    for batch_id in range(6):
        store.save(PcaState(batch_id, FEATURIZER, PcaStats.empty(DIM)))
    assert sorted(store.files.names()) == ["state-3.npz", "state-4.npz", "state-5.npz"]
    assert store.latest_before(5).batch_id == 4 and store.get(2) is None


# --- Pairing policy ----------------------------------------------------------------------------


def labelled(seed: int = 1) -> LabelledFeatures:
    rng = np.random.default_rng(seed)
    labels = ["a", "b"] * 30
    centres = {"a": np.full(DIM, 2.0), "b": np.zeros(DIM)}
    x = np.stack([centres[label] for label in labels]) + rng.normal(0, 0.3, (60, DIM))
    rows = TrainingRows.of_specimens(labels, [f"frame{i}.jpg" for i in range(len(labels))])
    return LabelledFeatures("s3://lake/training_features/version=v0", FEATURIZER, x.astype(np.float32), rows)


def store_with_current(training_features: str | None, validation: Evaluation | None = None) -> ModelStore:
    store = ModelStore(MemoryS3(), "models")
    training = labelled()
    stats = PcaStats.empty(DIM)
    stats.add(training.features)
    pca = stats.fit(0.98)
    bundle = ModelBundle("v0", FEATURIZER, pca, fit_classifier(pca.transform(training.features), training.labels))
    manifest = Manifest.describe(
        bundle, trained_on=TrainedOn("local", "data/Training", 60, 2, per_class_limit=30), min_explained_variance=0.98,
        training_seconds=1.0, training_features=training_features, validation=validation,
    )  # fmt: skip
    store.save(replace(bundle, manifest=manifest))
    return store


def streamed_state() -> PcaState:
    stats = PcaStats.empty(DIM)
    stats.add(labelled(seed=2).features)
    return PcaState(9, FEATURIZER, stats)


def test_publishes_the_new_pca_with_a_classifier_trained_for_it():
    training = labelled()
    store = store_with_current(training.uri)
    version = PcaPublisher(Settings(), store, lambda uri: training).publish(streamed_state())
    assert version is not None and store.current_version() == version
    bundle = store.load(version)
    manifest = bundle.manifest
    assert json.loads(store.client.objects["models", f"bundles/{version}/manifest.json"])["format"] == BUNDLE_FORMAT
    assert manifest.training_features == training.uri and manifest.parent_version == "v0"
    assert manifest.pca.stream == PcaStream(Settings().topic_features, rows=60, through_batch_id=9)
    assert manifest.trained_on == TrainedOn("streaming", training.uri, 60, 2, per_class_limit=30)
    assert 0.98 <= manifest.pca.explained_variance <= 1.0 and manifest.pca.min_explained_variance == 0.98
    # The trainers' recipe: calibrated, and validated out of fold (a refit has no held-out set).
    assert manifest.calibration.temperature == bundle.classifier.temperature > 0
    assert manifest.calibration.unsure_below == bundle.classifier.unsure_below
    assert manifest.validation.images == 60 and manifest.validation.top1_accuracy == 1.0
    assert manifest.evaluation is None
    assert bundle.classifier.coef.shape[1] == bundle.pca.k  # trained on this PCA's projections
    projected = bundle.pca.transform(training.features)
    predicted = np.asarray(bundle.classifier.labels)[bundle.classifier.predict_proba(projected).argmax(axis=1)]
    assert (predicted == np.asarray(training.labels)).mean() == 1.0


def test_publishes_nothing_without_labelled_features(caplog):
    store = store_with_current(None)
    with caplog.at_level("WARNING"):
        assert PcaPublisher(Settings(), store, lambda uri: pytest.fail("nothing to read")).publish(streamed_state()) is None
    assert store.current_version() == "v0"
    assert "names no labelled training features" in caplog.text


def test_publishes_nothing_for_another_featurizer(caplog):
    training = labelled()
    other = LabelledFeatures(training.uri, "other@123", training.features, training.rows)
    store = store_with_current(training.uri)
    with caplog.at_level("WARNING"):
        assert PcaPublisher(Settings(), store, lambda uri: other).publish(streamed_state()) is None
    assert store.current_version() == "v0" and "featurizer other@123" in caplog.text


def refits(outcome: str) -> float:
    return REGISTRY.get_sample_value("fruits_pca_refits_total", {"outcome": outcome}) or 0.0


def test_a_refit_worse_than_the_current_bundle_is_held_back_as_a_candidate(caplog):
    training = labelled()
    # The current bundle claims a perfect out-of-fold validation, with every not-ours photo caught.
    perfect = Evaluation(images=60, top1_correct=60, typed=60, type_top1_correct=60, foreign=10, foreign_unsure=10)
    store = store_with_current(training.uri, validation=perfect)
    before = refits("held_back")
    with caplog.at_level("WARNING"):
        version = PcaPublisher(Settings(), store, lambda uri: training).publish(streamed_state())
    assert version is not None and version in store.versions() and store.current_version() == "v0"
    assert refits("held_back") == before + 1
    assert f"bundle {version} held back as a candidate" in caplog.text and "foreign_unsure_share" in caplog.text


def test_a_refit_as_good_as_the_current_bundle_is_promoted():
    training = labelled()
    same = Evaluation(images=60, top1_correct=60, typed=60, type_top1_correct=60)
    store = store_with_current(training.uri, validation=same)
    before = refits("promoted")
    version = PcaPublisher(Settings(), store, lambda uri: training).publish(streamed_state())
    assert store.current_version() == version and refits("promoted") == before + 1

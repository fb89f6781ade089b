"""Live PCA updates of the streaming job, run in ``foreachBatch`` on the features stream.

Per micro-batch: exact partial statistics (count, sum, sum of outer products) are
computed on the executors, merged on the driver into the running totals, and the
totals saved as ``state-<batchId>.npz`` beside the features query's checkpoint. The
state is keyed by batchId: a batch Spark replays after a crash finds its state
already saved and is not counted twice. Every ``pca_update_rows`` new rows (or
``pca_update_seconds``, if any row arrived) the PCA is refitted from the totals and
published as a new bundle, paired with a classifier retrained for it:

**Pairing policy.** A bundle is a PCA and the classifier trained on that PCA's
projections. The job publishes a new PCA only together with a classifier retrained
on the labelled training features that the current bundle was trained on (its
manifest's ``training_features``, written to the lake by ``fruits train``),
projected by the new PCA. Without such a set, or if its featurizer differs from the
stream's, nothing is published and the job says why. Reduce tags each record with
the bundle version whose PCA it used and predict applies that bundle's classifier,
so a PCA and a classifier from different bundles never meet.
"""

from __future__ import annotations

import io
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from core.lake import rows_of_table, to_s3a
from core.manifest import Manifest, PcaStream, TrainedOn
from core.metrics import PCA_REFITS, ModelMetrics
from core.model import ModelBundle, ModelStore, PcaStats, new_version
from core.recipe import TrainingRows, fit_calibrated, not_worse
from core.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

STATE_FILE = re.compile(r"state-(\d+)\.npz")
KEEP_STATES = 3


@dataclass(frozen=True)
class PcaState:
    """Running statistics after micro-batch ``batch_id``, and when the PCA was last published."""

    batch_id: int
    featurizer_id: str
    stats: PcaStats
    rows_at_publish: int = 0
    published_at: float = 0.0
    """Unix time of the last publication (of the first batch before any)."""
    published_version: str | None = None

    def to_bytes(self) -> bytes:
        d = len(self.stats.total)
        upper = np.triu_indices(d)  # the sum of outer products is symmetric: store half
        meta = {
            "batch_id": self.batch_id, "featurizer_id": self.featurizer_id, "count": self.stats.count,
            "rows_at_publish": self.rows_at_publish, "published_at": self.published_at,
            "published_version": self.published_version,
        }  # fmt: skip
        out = io.BytesIO()
        np.savez(out, meta=np.array(json.dumps(meta)), total=self.stats.total, outer=self.stats.outer[upper])
        return out.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> PcaState:
        with np.load(io.BytesIO(data)) as f:
            meta = json.loads(str(f["meta"]))
            total = f["total"]
            d = len(total)
            outer = np.zeros((d, d))
            outer[np.triu_indices(d)] = f["outer"]
            outer = outer + np.triu(outer, 1).T
        return cls(
            meta["batch_id"], meta["featurizer_id"], PcaStats(meta["count"], total, outer),
            meta["rows_at_publish"], meta["published_at"], meta["published_version"],
        )  # fmt: skip

    @property
    def new_rows(self) -> int:
        return self.stats.count - self.rows_at_publish


def advance(previous: PcaState | None, batch_id: int, featurizer_id: str, batch: PcaStats, now: float) -> PcaState:
    """The state after ``batch_id``: the previous totals plus this batch's statistics."""
    if previous is None:
        return PcaState(batch_id, featurizer_id, batch, published_at=now)
    if previous.batch_id >= batch_id:
        raise ValueError(f"state of batch {previous.batch_id} cannot precede batch {batch_id}")
    return replace(previous, batch_id=batch_id, stats=previous.stats.merge(batch))


def publish_reason(state: PcaState, now: float, every_rows: int, every_seconds: float) -> str | None:
    """Why the PCA is due for a refit now, or None."""
    if state.new_rows <= 0 or state.stats.count < 2:
        return None
    if state.new_rows >= every_rows:
        return f"{state.new_rows} new rows (every {every_rows})"
    if now - state.published_at >= every_seconds:
        return f"{now - state.published_at:.0f} s since the last publication (every {every_seconds:.0f} s)"
    return None


# --- State files beside the checkpoint ------------------------------------------------------------


class Files(Protocol):
    """The few file operations the state needs, on the checkpoint's filesystem."""

    def read(self, name: str) -> bytes: ...
    def write(self, name: str, data: bytes) -> None: ...
    def names(self) -> list[str]: ...
    def delete(self, name: str) -> None: ...


class HadoopFiles:
    """A folder on any Hadoop filesystem (s3a://, hdfs://, file:), through Spark's JVM:
    the same filesystem, configuration and credentials as the checkpoint itself."""

    def __init__(self, spark: SparkSession, folder: str) -> None:
        jvm = spark.sparkContext._jvm
        self._jvm = jvm
        self._folder = jvm.org.apache.hadoop.fs.Path(folder)
        self._fs = self._folder.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())

    def _path(self, name: str) -> Any:
        return self._jvm.org.apache.hadoop.fs.Path(self._folder, name)

    def read(self, name: str) -> bytes:
        stream = self._fs.open(self._path(name))
        try:
            return bytes(self._jvm.org.apache.commons.io.IOUtils.toByteArray(stream))
        finally:
            stream.close()

    def write(self, name: str, data: bytes) -> None:
        # S3A uploads on close(): readers see the whole object or none.
        stream = self._fs.create(self._path(name), True)
        try:
            stream.write(bytearray(data))
        finally:
            stream.close()

    def names(self) -> list[str]:
        if not self._fs.exists(self._folder):
            return []
        return [status.getPath().getName() for status in self._fs.listStatus(self._folder)]

    def delete(self, name: str) -> None:
        self._fs.delete(self._path(name), False)


class StateStore:
    def __init__(self, files: Files) -> None:
        self.files = files

    def _batch_ids(self) -> list[int]:
        return sorted(int(m.group(1)) for name in self.files.names() if (m := STATE_FILE.fullmatch(name)))

    def get(self, batch_id: int) -> PcaState | None:
        return PcaState.from_bytes(self.files.read(f"state-{batch_id}.npz")) if batch_id in self._batch_ids() else None

    def latest_before(self, batch_id: int) -> PcaState | None:
        earlier = [b for b in self._batch_ids() if b < batch_id]
        return PcaState.from_bytes(self.files.read(f"state-{earlier[-1]}.npz")) if earlier else None

    def save(self, state: PcaState) -> None:
        self.files.write(f"state-{state.batch_id}.npz", state.to_bytes())
        for old in self._batch_ids()[:-KEEP_STATES]:
            self.files.delete(f"state-{old}.npz")


# --- Publishing -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelledFeatures:
    uri: str
    featurizer_id: str
    features: np.ndarray
    rows: TrainingRows

    @property
    def labels(self) -> list[str]:
        return self.rows.labels


def read_labelled_features(spark: SparkSession, uri: str) -> LabelledFeatures:
    """A training set written by a trainer (``core.lake``), collected to the driver."""
    frame = spark.read.parquet(to_s3a(uri))
    wanted = ["label", "features", "featurizer_id", "source", "type", "origin"]
    table = frame.select(*(c for c in wanted if c in frame.columns)).toPandas()
    featurizer_ids = set(table["featurizer_id"])
    if len(featurizer_ids) != 1:
        raise ValueError(f"{uri} mixes featurizers: {sorted(featurizer_ids)}")
    features = np.stack(table["features"].to_numpy()).astype(np.float32)
    return LabelledFeatures(uri, featurizer_ids.pop(), features, rows_of_table(table))


class PcaPublisher:
    """Fits the PCA from the running statistics and publishes it with its classifier."""

    def __init__(
        self,
        settings: Settings,
        store: ModelStore,
        read_training: Callable[[str], LabelledFeatures],
    ) -> None:
        self.settings = settings
        self.store = store
        self.read_training = read_training
        self._training: LabelledFeatures | None = None
        self.model_metrics = ModelMetrics("spark", settings.metrics_enabled)

    def _training_set(self, uri: str) -> LabelledFeatures:
        if self._training is None or self._training.uri != uri:
            self._training = self.read_training(uri)
        return self._training

    def publish(self, state: PcaState) -> str | None:
        """Refit a bundle (PCA from ``state`` + classifier trained for it) and make it current if its
        validation is not worse; its version (current or held back), or None and why in the log."""
        current = self.store.current_version()
        if current is None:
            log.warning("PCA not published: the model store has no current bundle (train one with `fruits train`)")
            return None
        parent = self.store.load_manifest(current)
        training = self._training_for(parent, state)
        if training is None:
            return None
        bundle = self.refit(state, training, parent)
        promote, why = self.promotable(bundle.manifest, parent)
        self.store.save(bundle, make_current=promote)  # the bundle's files first, then current.json
        PCA_REFITS.labels("promoted" if promote else "held_back").inc()
        if not promote:
            log.warning(
                "bundle %s held back as a candidate (`fruits model promote %s` to use it anyway): its validation is "
                "worse than the current bundle %s's: %s", bundle.version, bundle.version, parent.version, why,
            )  # fmt: skip
            return bundle.version
        self.model_metrics.use_pca(bundle.version, bundle.pca.explained_variance_ratio)
        log.info(
            "published bundle %s: PCA of %d streamed rows, k=%d (%.1f %% of the variance), classifier "
            "retrained on %s; %s",
            bundle.version, state.stats.count, bundle.pca.k, 100 * bundle.pca.explained_variance_ratio.sum(),
            training.uri, why,
        )  # fmt: skip
        return bundle.version

    def promotable(self, candidate: Manifest, current: Manifest) -> tuple[bool, str]:
        """Whether a refit may replace the current bundle: its out-of-fold validation is not worse."""
        if current.validation is None:
            return True, f"the current bundle {current.version} has no validation to compare with"
        assert candidate.validation is not None, "refit() validates every refit"
        return not_worse(candidate.validation, current.validation, self.settings.pca_promotion_tolerance)

    def _training_for(self, parent: Manifest, state: PcaState) -> LabelledFeatures | None:
        """The labelled features the current bundle was trained on, or None (and why in the log)."""
        uri = parent.training_features
        if not uri:
            log.warning(
                "PCA not published: the current bundle %s names no labelled training features to retrain the "
                "classifier on (bundles of `fruits train` from this release on do)", parent.version,
            )  # fmt: skip
            return None
        training = self._training_set(uri)
        if training.featurizer_id != state.featurizer_id:
            log.warning(
                "PCA not published: the labelled features %s come from featurizer %s, the stream from %s",
                uri, training.featurizer_id, state.featurizer_id,
            )  # fmt: skip
            return None
        return training

    def refit(self, state: PcaState, training: LabelledFeatures, parent: Manifest) -> ModelBundle:
        """The PCA of the streamed statistics and a classifier trained on its projections of
        ``training`` with the trainers' recipe (calibration, unsure threshold, out-of-fold
        validation: there is no held-out set here)."""
        started = time.perf_counter()
        min_explained_variance = self.settings.pca_min_explained_variance
        pca = state.stats.fit(min_explained_variance)
        classifier, calibration, validation = fit_calibrated(training.rows.labelled(pca.transform(training.features)))
        bundle = ModelBundle(new_version(), state.featurizer_id, pca, classifier)
        training_seconds = time.perf_counter() - started
        labels = training.labels
        manifest = Manifest.describe(
            bundle,
            trained_on=TrainedOn(
                "streaming", training.uri, len(labels), len(set(labels)), parent.trained_on.per_class_limit
            ),
            min_explained_variance=min_explained_variance,
            training_seconds=training_seconds,
            training_features=training.uri,
            parent_version=parent.version,
            pca_stream=PcaStream(self.settings.topic_features, state.stats.count, state.batch_id),
            calibration=calibration,
            validation=validation,
        )
        return replace(bundle, manifest=manifest)


class BatchStats(Protocol):
    """Statistics of one micro-batch's feature rows (of the stream's featurizer only)."""

    def dim(self, rows: Any) -> int | None:
        """Length of the rows' vectors, None if the batch has no row of the stream's featurizer."""

    def stats(self, rows: Any, dim: int) -> PcaStats: ...


class PcaUpdater:
    """The features query's foreachBatch step after the lake write: ``update(rows, batch_id)``."""

    def __init__(
        self,
        settings: Settings,
        states: StateStore,
        publisher: PcaPublisher,
        featurizer_id: str,
        batch_stats: BatchStats,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.states = states
        self.publisher = publisher
        self.featurizer_id = featurizer_id
        self.batch_stats = batch_stats
        self.clock = clock

    def update(self, rows: DataFrame, batch_id: int) -> PcaState | None:
        """Count batch ``batch_id`` once (a replay finds its state saved), then publish if due."""
        state = self.states.get(batch_id)
        if state is not None:
            log.info("PCA: batch %d was counted before a restart; not counting it again", batch_id)
        else:
            previous = self.states.latest_before(batch_id)
            dim = len(previous.stats.total) if previous else self.batch_stats.dim(rows)
            if dim is None:  # no vector of our featurizer seen yet
                return None
            batch = self.batch_stats.stats(rows, dim)
            state = advance(previous, batch_id, self.featurizer_id, batch, self.clock())
            self.states.save(state)
        reason = publish_reason(state, self.clock(), self.settings.pca_update_rows, self.settings.pca_update_seconds)
        if reason is None:
            return state
        log.info("PCA: refitting from %d rows: %s", state.stats.count, reason)
        version = self.publisher.publish(state)
        if version is not None:
            state = replace(
                state, rows_at_publish=state.stats.count, published_at=self.clock(), published_version=version
            )
            self.states.save(state)
        return state

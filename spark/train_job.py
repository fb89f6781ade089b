"""Spark batch training: ``fruits train --engine spark DATA_DIR`` (or ``make train-spark``).

Reads the training images packed in Parquet on the lake (``training.packing``, done by
``--upload``: the local trainer's images, in its order, a few files of small row groups),
featurizes them with a pandas UDF running the same preprocess and ONNX featurizer as the
services (one onnxruntime session per Python worker process, batched), fits the PCA from the
same mergeable statistics as the local trainer (partial sums on the executors), and the
classifier with the local trainer's recipe (``core.recipe``) on the driver; returns the same
bundle format. The labelled features go to the lake's ``training_features`` (the streaming
job retrains classifiers on them).
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import fields, replace
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from core import lake
from core.evaluation import Evaluation
from core.evaluation import evaluate as evaluate_bundle  # `evaluate` is train_with_spark()'s flag
from core.featurizer import Featurizer, model_id
from core.imaging import preprocess
from core.manifest import Calibration, Manifest, TrainedOn
from core.model import Classifier, ModelBundle, Pca, new_version
from core.recipe import RECIPE, Recipe, TrainingRows, fit_calibrated
from core.s3 import s3_client
from core.settings import Settings, get_settings
from spark import transforms
from spark.session import spark_session

log = logging.getLogger(__name__)

BATCH = 64
"""Images per onnxruntime call inside the UDF."""


# --- The packed images ------------------------------------------------------------------------------


def packed_manifest(settings: Settings, split: str) -> dict[str, Any] | None:
    """The manifest of a packed split (``training.packing``), or None if it is not packed."""
    client = s3_client(settings)
    try:
        body = client.get_object(Bucket=settings.lake_bucket, Key=lake.packed_manifest_key(settings, split))["Body"]
    except client.exceptions.NoSuchKey:
        return None
    return json.loads(body.read())


# --- Featurizing on the executors --------------------------------------------------------------------

_featurizers: dict[str, Featurizer] = {}


def _featurizer(expected_id: str) -> Featurizer:
    """This Python worker's featurizer, created once (Spark reuses its Python workers)."""
    if expected_id not in _featurizers:
        featurizer = Featurizer(get_settings().featurizer_path, threads=1)  # one core per task
        if featurizer.id != expected_id:
            raise RuntimeError(f"executor has featurizer {featurizer.id}, the driver {expected_id}")
        _featurizers[expected_id] = featurizer
    return _featurizers[expected_id]


def featurize_column(content: F.Column, featurizer_id: str) -> F.Column:
    """Image bytes → feature vector: the services' preprocess and ONNX featurizer in a pandas UDF."""

    @F.pandas_udf("array<float>")
    def featurize(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        featurizer = _featurizer(featurizer_id)
        for images in batches:
            out: list[np.ndarray] = []
            for start in range(0, len(images), BATCH):
                tensors = np.stack([preprocess(bytes(b)) for b in images.iloc[start : start + BATCH]])
                out.extend(featurizer(tensors))
            yield pd.Series(out, index=images.index)

    return featurize(content)


def featurized(spark: SparkSession, settings: Settings, split: str, featurizer_id: str) -> DataFrame:
    """The packed split's rows (row, label, type, origin, source) with their features. Spark
    splits the packed files at row groups over the cores (``training.packing``): no shuffle."""
    packed = spark.read.parquet(lake.packed_images_uri(settings, split, scheme="s3a"))
    return packed.select(
        "row", "label", "type", "origin", "source",
        featurize_column(F.col("image"), featurizer_id).alias("features"),
    )  # fmt: skip


def projected(features: DataFrame, pca: Pca) -> tuple[np.ndarray, TrainingRows]:
    """PCA projections (computed on the executors) and the rows they belong to, collected to
    the driver in the packed order: the local trainer's, which the recipe's folds follow."""
    mean, components = pca.mean, pca.components
    kept = ["row", "label", "type", "origin", "source"]

    def project(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            x = np.stack(batch["features"].to_numpy()).astype(np.float32)
            y = (x - mean) @ components.T
            yield batch[kept].assign(projection=list(y.astype(np.float32)))

    schema = "row long, label string, type string, origin string, source string, projection array<float>"
    rows = features.select(*kept, "features").mapInPandas(project, schema).toPandas().sort_values("row")
    return np.stack(rows["projection"].to_numpy()), lake.rows_of_table(rows)


def evaluate_on_executors(features: DataFrame, bundle: ModelBundle) -> Evaluation:
    """``core.evaluation.evaluate`` on each batch of rows where they are (the bundle travels to
    the executors), the counts merged on the driver: nothing but counts is collected."""
    counts = [f.name for f in fields(Evaluation)]

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            if len(batch):
                x = np.stack(batch["features"].to_numpy()).astype(np.float32)
                part = evaluate_bundle(bundle, x, [str(label) for label in batch["label"]])
                yield pd.DataFrame([{name: getattr(part, name) for name in counts}])

    schema = ", ".join(f"{name} long" for name in counts)
    rows = features.select("label", "features").mapInPandas(score, schema).toPandas().to_dict("records")
    return functools.reduce(Evaluation.merge, map(Evaluation.from_dict, rows), Evaluation())


# --- The job --------------------------------------------------------------------------------------------


def fit_on_training_split(
    spark: SparkSession,
    settings: Settings,
    featurizer_id: str,
    features_uri: str,
    min_explained_variance: float,
    recipe: Recipe = RECIPE,
) -> tuple[Pca, Classifier, TrainingRows, Calibration, Evaluation]:
    """Featurize the packed Training split once, store the labelled features at ``features_uri``,
    fit the PCA (partial statistics on the executors) and the classifier, its calibration and
    validation (``core.recipe``, on the driver); and the training rows."""
    training = featurized(spark, settings, "Training", featurizer_id).persist()
    try:
        # The labelled set first (the bundle's manifest will name it), which also featurizes
        # every image once; the statistics and projections then read the cached rows. The
        # columns are the local trainer's (``core.lake.training_features_table``).
        (
            training.orderBy("row")
            .select("label", "features", "source", F.lit(featurizer_id).alias("featurizer_id"), "type", "origin")
            .write.mode("overwrite").parquet(lake.to_s3a(features_uri))
        )  # fmt: skip
        dim = len(training.select("features").first()[0])
        pca = transforms.pca_stats(training, dim).fit(min_explained_variance)
        log.info(
            "PCA: k=%d components explain %.1f %% of the variance", pca.k, 100 * pca.explained_variance_ratio.sum()
        )
        x, rows = projected(training, pca)
        classifier, calibration, validation = fit_calibrated(rows.labelled(x), recipe)
        return pca, classifier, rows, calibration, validation
    finally:
        training.unpersist()


def evaluate_test_split(spark: SparkSession, settings: Settings, bundle: ModelBundle) -> Evaluation | None:
    """The bundle's scores on the packed Test split, or None (and a warning) if there is none."""
    if packed_manifest(settings, "Test") is None:
        log.warning("no packed Test split in %s: not scored (pack it with --upload)",
                    lake.packed_images_uri(settings, "Test"))  # fmt: skip
        return None
    return evaluate_on_executors(featurized(spark, settings, "Test", bundle.featurizer_id), bundle)


def train_with_spark(settings: Settings, min_explained_variance: float = 0.98, evaluate: bool = True) -> ModelBundle:
    """Train a bundle with Spark on the packed Training split (``training.packing``: the local
    trainer's images, in its order) with the local trainer's recipe; the packed Test split, if
    there, is scored."""
    started = time.perf_counter()  # as the local trainer's: from the first image read to the classifier
    packed = packed_manifest(settings, "Training")
    training_uri = lake.packed_images_uri(settings, "Training")
    if packed is None:
        raise FileNotFoundError(f"no packed training images in {training_uri}: pack them with --upload")
    featurizer_id = model_id(settings.featurizer_path)
    # Arrow batches of a few hundred images: the UDF's worker holds one batch's bytes at a time.
    spark = spark_session(settings, "fruits-train", {"spark.sql.execution.arrow.maxRecordsPerBatch": "256"})
    version = new_version()
    features_uri = lake.training_features_uri(settings, version)
    pca, classifier, rows, calibration, validation = fit_on_training_split(
        spark, settings, featurizer_id, features_uri, min_explained_variance
    )
    bundle = ModelBundle(version, featurizer_id, pca, classifier)
    training_seconds = time.perf_counter() - started
    scored = evaluate_test_split(spark, settings, bundle) if evaluate else None
    engine = f"Spark {spark.version}, master {settings.spark_master or '(from spark-submit)'}"
    contents = packed["contents"]
    source = f"{contents['description']} (packed in {training_uri})"
    manifest = Manifest.describe(
        bundle,
        trained_on=TrainedOn("spark", source, len(rows.labels), len(set(rows.labels)), contents["per_class"], engine),
        min_explained_variance=min_explained_variance,
        training_seconds=training_seconds,
        training_features=features_uri,
        evaluation=scored,
        evaluated_on=None if scored is None else lake.packed_images_uri(settings, "Test"),
        calibration=calibration,
        validation=validation,
    )
    log.info("spark training done in %.0f s", time.perf_counter() - started)
    return replace(bundle, manifest=manifest)

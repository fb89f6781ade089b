"""Spark batch training: ``fruits train --engine spark DATA_DIR`` (or ``make train-spark``).

Reads the labelled images from ``s3://<lake bucket>/<lake prefix>/images/<split>/<label>/<file>``
with the ``binaryFile`` source (``--upload`` copies DATA_DIR's there first), featurizes them
with a pandas UDF running the same preprocess and ONNX featurizer as the services (one
onnxruntime session per Python worker process, batched), fits the PCA from the same
mergeable statistics as the local trainer (partial sums on the executors), trains the
same classifier on the driver, and returns the same bundle format. The labelled features
go to the lake's ``training_features`` (the streaming job retrains classifiers on them).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from tqdm import tqdm

from core import lake
from core.datasets import IMAGE_SUFFIXES, test_dir_beside, training_dir
from core.evaluation import Evaluation
from core.evaluation import evaluate as evaluate_bundle  # `evaluate` is train_with_spark()'s flag
from core.featurizer import Featurizer, model_id
from core.imaging import preprocess
from core.manifest import Calibration, Manifest, TrainedOn
from core.model import Classifier, ModelBundle, Pca, new_version
from core.recipe import TrainingRows, fit_calibrated
from core.s3 import s3_client
from core.settings import Settings, get_settings
from spark import transforms
from spark.session import spark_session

log = logging.getLogger(__name__)

IMAGES = "images"
BATCH = 64
"""Images per onnxruntime call inside the UDF."""


# --- Upload -----------------------------------------------------------------------------------------


def images_key(settings: Settings, split: str) -> str:
    return lake.lake_key(settings, IMAGES, split)


def upload_split(settings: Settings, split_dir: Path, split: str) -> int:
    """Copy ``split_dir/<label>/<image>`` to the lake's ``images/<split>/``, skipping files
    already there with the same size; returns how many were uploaded."""
    client = s3_client(settings)
    prefix = images_key(settings, split) + "/"
    present: dict[str, int] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=settings.lake_bucket, Prefix=prefix):
        present.update({obj["Key"]: obj["Size"] for obj in page.get("Contents", [])})
    files = sorted(p for p in split_dir.glob("*/*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    todo = [(p, f"{prefix}{p.parent.name}/{p.name}") for p in files]
    todo = [(p, key) for p, key in todo if present.get(key) != p.stat().st_size]

    def put(item: tuple[Path, str]) -> None:
        path, key = item
        client.put_object(Bucket=settings.lake_bucket, Key=key, Body=path.read_bytes())

    with ThreadPoolExecutor(8) as pool, tqdm(total=len(todo), desc=f"upload {split}", unit="img") as bar:
        for _ in pool.map(put, todo):
            bar.update()
    log.info("%s: %d images uploaded, %d already in s3://%s/%s", split, len(todo), len(files) - len(todo),
             settings.lake_bucket, prefix)  # fmt: skip
    return len(todo)


def split_in_lake(settings: Settings, split: str) -> bool:
    listed = s3_client(settings).list_objects_v2(
        Bucket=settings.lake_bucket, Prefix=images_key(settings, split) + "/", MaxKeys=1
    )
    return listed.get("KeyCount", 0) > 0


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


def labelled_images(spark: SparkSession, settings: Settings, split: str, per_class: int | None) -> DataFrame:
    """path, label (the image's folder) and content of the split's images in S3."""
    uri = lake.lake_uri(settings, IMAGES, split, scheme="s3a")
    suffixes = "|".join(s.lstrip(".") for s in sorted(IMAGE_SUFFIXES))

    def read(paths: str | list[str]) -> DataFrame:
        return (
            spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(paths)
            .where(F.lower(F.col("path")).rlike(rf"\.({suffixes})$"))
            .withColumn("label", F.url_decode(F.element_at(F.split("path", "/"), -2)))
        )  # fmt: skip

    if per_class:
        # Choose the files from the listing alone (binaryFile reads no content for it), then read those.
        rank = F.row_number().over(Window.partitionBy("label").orderBy("path"))
        chosen = read(uri).select("path", "label").withColumn("rank", rank).where(F.col("rank") <= per_class)
        return read([row["path"] for row in chosen.select("path").collect()]).select("path", "label", "content")
    return read(uri).select("path", "label", "content")


def featurized(
    spark: SparkSession, settings: Settings, split: str, featurizer_id: str, per_class: int | None
) -> DataFrame:
    images = labelled_images(spark, settings, split, per_class)
    # Spread the small files over enough tasks for every core (binaryFile packs them into few).
    partitions = max(2 * spark.sparkContext.defaultParallelism, 4)
    return images.repartition(partitions).select(
        "path", "label", featurize_column(F.col("content"), featurizer_id).alias("features")
    )


def projected(features: DataFrame, pca: Pca) -> tuple[np.ndarray, list[str], list[str]]:
    """PCA projections (computed on the executors), labels and paths, collected to the driver in
    path order (the frames of a class in sequence, as the recipe's folds want them)."""
    mean, components = pca.mean, pca.components

    def project(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            x = np.stack(batch["features"].to_numpy()).astype(np.float32)
            y = (x - mean) @ components.T
            yield pd.DataFrame(
                {"path": batch["path"], "label": batch["label"], "projection": list(y.astype(np.float32))}
            )

    schema = "path string, label string, projection array<float>"
    rows = features.select("path", "label", "features").mapInPandas(project, schema).toPandas().sort_values("path")
    return np.stack(rows["projection"].to_numpy()), [str(v) for v in rows["label"]], [str(v) for v in rows["path"]]


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


def upload_splits(settings: Settings, data_dir: Path, with_test: bool) -> None:
    """Copy DATA_DIR's Training split (and its Test split, if there and ``with_test``) to the lake."""
    training_local = training_dir(data_dir)
    test_local = test_dir_beside(training_local)
    splits = {"Training": training_local} | ({"Test": test_local} if with_test and test_local else {})
    for split, folder in splits.items():
        upload_split(settings, folder, split)


def fit_on_training_split(
    spark: SparkSession,
    settings: Settings,
    featurizer_id: str,
    features_uri: str,
    min_explained_variance: float,
    per_class: int | None,
) -> tuple[Pca, Classifier, list[str], Calibration, Evaluation]:
    """Featurize the Training split once, store the labelled features at ``features_uri``, fit the
    PCA (partial statistics on the executors) and the classifier (on the driver); and the labels."""
    training = featurized(spark, settings, "Training", featurizer_id, per_class).persist()
    try:
        # The labelled set first (the bundle's manifest will name it), which also featurizes
        # every image once; the statistics and projections then read the cached rows.
        (
            training.select("label", "features", F.col("path").alias("source"),
                            F.lit(featurizer_id).alias("featurizer_id"))
            .write.mode("overwrite").parquet(lake.to_s3a(features_uri))
        )  # fmt: skip
        dim = len(training.select("features").first()[0])
        pca = transforms.pca_stats(training, dim).fit(min_explained_variance)
        log.info(
            "PCA: k=%d components explain %.1f %% of the variance", pca.k, 100 * pca.explained_variance_ratio.sum()
        )
        x, labels, paths = projected(training, pca)
        classifier, calibration, validation = fit_calibrated(TrainingRows.of_specimens(labels, paths).labelled(x))
        return pca, classifier, labels, calibration, validation
    finally:
        training.unpersist()


def evaluate_test_split(spark: SparkSession, settings: Settings, bundle: ModelBundle) -> Evaluation | None:
    """The bundle's scores on the Test split in the lake, or None (and a warning) if there is none."""
    if not split_in_lake(settings, "Test"):
        log.warning("no images in %s: not scored (upload them with --upload)", lake.lake_uri(settings, IMAGES, "Test"))
        return None
    return evaluate_on_executors(featurized(spark, settings, "Test", bundle.featurizer_id, None), bundle)


def train_with_spark(
    settings: Settings,
    data_dir: Path,
    min_explained_variance: float = 0.98,
    evaluate: bool = True,
    per_class: int | None = None,
    upload: bool = False,
) -> ModelBundle:
    """Train a bundle with Spark from the images in S3 (uploaded from ``data_dir`` first
    if ``upload``); the Test split in S3, if there, is scored."""
    if upload:
        upload_splits(settings, data_dir, with_test=evaluate)
    started = time.perf_counter()  # as the local trainer's: from the first image read to the classifier
    training_uri = lake.lake_uri(settings, IMAGES, "Training")
    if not split_in_lake(settings, "Training"):
        raise FileNotFoundError(f"no images in {training_uri}: upload them with --upload")
    featurizer_id = model_id(settings.featurizer_path)
    spark = spark_session(settings, "fruits-train")
    version = new_version()
    features_uri = lake.training_features_uri(settings, version)
    pca, classifier, labels, calibration, validation = fit_on_training_split(
        spark, settings, featurizer_id, features_uri, min_explained_variance, per_class
    )
    bundle = ModelBundle(version, featurizer_id, pca, classifier)
    training_seconds = time.perf_counter() - started
    scored = evaluate_test_split(spark, settings, bundle) if evaluate else None
    engine = f"Spark {spark.version}, master {settings.spark_master or '(from spark-submit)'}"
    manifest = Manifest.describe(
        bundle,
        trained_on=TrainedOn("spark", training_uri, len(labels), len(set(labels)), per_class, engine),
        min_explained_variance=min_explained_variance,
        training_seconds=training_seconds,
        training_features=features_uri,
        evaluation=scored,
        evaluated_on=None if scored is None else lake.lake_uri(settings, IMAGES, "Test"),
        calibration=calibration,
        validation=validation,
    )
    log.info("spark training done in %.0f s", time.perf_counter() - started)
    return replace(bundle, manifest=manifest)

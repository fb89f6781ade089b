"""Local trainer: Fruits-360 layout (``Training/<label>/*.jpg``) → model bundle.

Featurizes with the same preprocess and ONNX featurizer as the services, fits the
PCA from mergeable statistics (k = fewest components reaching the explained-variance
target), trains a multinomial logistic regression on the standardised projections,
and publishes the bundle to the S3 model store."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from core.datasets import list_images, test_dir_beside, training_dir
from core.evaluation import Evaluation
from core.evaluation import evaluate as evaluate_bundle  # `evaluate` is train()'s flag
from core.featurizer import Featurizer
from core.imaging import preprocess
from core.manifest import Manifest, TrainedOn
from core.model import ModelBundle, PcaStats, fit_classifier, new_version

log = logging.getLogger(__name__)

FEATURIZE_BATCH = 64


def _batches(paths: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for start in range(0, len(paths), size):
        yield paths[start : start + size]


def featurize_files(paths: Sequence[Path], featurizer: Featurizer, description: str) -> np.ndarray:
    """Features of image files, with a progress bar; decoding overlaps inference."""
    features = []
    with ThreadPoolExecutor(2) as decoder, tqdm(total=len(paths), desc=description, unit="img") as bar:
        for batch in _batches(paths, FEATURIZE_BATCH):
            tensors = list(decoder.map(lambda p: preprocess(p.read_bytes()), batch))
            features.append(featurizer(np.stack(tensors)))
            bar.update(len(batch))
    return np.concatenate(features)


SaveFeatures = Callable[[str, np.ndarray, Sequence[str], Sequence[str], str], str]
"""``(version, features, labels, sources, featurizer_id) → URI``: stores a bundle's labelled
training features (e.g. ``core.lake.training_features_writer``)."""


def train(
    data_dir: Path,
    featurizer: Featurizer,
    min_explained_variance: float = 0.98,
    evaluate: bool = True,
    per_class: int | None = None,
    save_features: SaveFeatures | None = None,
) -> ModelBundle:
    """Train a bundle from ``data_dir``; if a ``Test`` split sits beside ``Training``,
    score it and record the evaluation in the manifest. With ``save_features``, the
    labelled training features are stored and the manifest names them
    (``training_features``): the streaming job retrains the classifier on them when it
    publishes a new PCA."""
    started = time.perf_counter()
    training = list_images(training_dir(data_dir), per_class)
    log.info("training on %d images of %d classes", len(training.paths), len(set(training.labels)))
    features = featurize_files(training.paths, featurizer, "featurize training images")
    stats = PcaStats.empty(features.shape[1])
    stats.add(features)
    pca = stats.fit(min_explained_variance)
    log.info("PCA: k=%d components explain %.1f %% of the variance", pca.k, 100 * pca.explained_variance_ratio.sum())
    bundle = ModelBundle(new_version(), featurizer.id, pca, fit_classifier(pca.transform(features), training.labels))
    training_seconds = time.perf_counter() - started
    features_uri = None
    if save_features is not None:
        sources = [str(p) for p in training.paths]
        features_uri = save_features(bundle.version, features, training.labels, sources, featurizer.id)
    test_dir = test_dir_beside(training_dir(data_dir))
    scored = evaluate_test(bundle, featurizer, test_dir) if evaluate and test_dir is not None else None
    manifest = Manifest.describe(
        bundle,
        trained_on=TrainedOn("local", str(data_dir), len(training.paths), len(set(training.labels)), per_class),
        min_explained_variance=min_explained_variance,
        training_seconds=training_seconds,
        training_features=features_uri,
        evaluation=scored,
        evaluated_on=None if scored is None else str(test_dir),
    )
    return replace(bundle, manifest=manifest)


def evaluate_test(bundle: ModelBundle, featurizer: Featurizer, test_dir: Path) -> Evaluation:
    """The bundle's scores on the labelled images of ``test_dir`` (``<label>/*.jpg``)."""
    test = list_images(test_dir)
    return evaluate_bundle(bundle, featurize_files(test.paths, featurizer, "featurize test images"), test.labels)

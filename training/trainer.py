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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from core.featurizer import Featurizer
from core.imaging import preprocess
from core.datasets import list_images, test_dir_beside, training_dir
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


def accuracy(bundle: ModelBundle, features: np.ndarray, labels: Sequence[str]) -> float:
    probabilities = bundle.classifier.predict_proba(bundle.pca.transform(features))
    predicted = np.asarray(bundle.classifier.labels)[probabilities.argmax(axis=1)]
    return float((predicted == np.asarray(labels)).mean())


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
    score it and record the accuracy in the manifest. With ``save_features``, the
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
    classifier = fit_classifier(pca.transform(features), training.labels)
    manifest: dict = {
        "trained_on": {"path": str(data_dir), "images": len(training.paths), "classes": len(set(training.labels))},
        "pca_selection": {"min_explained_variance": min_explained_variance},
        "per_class_limit": per_class,
        "training_seconds": round(time.perf_counter() - started, 1),
    }
    version = new_version()
    if save_features is not None:
        sources = [str(p) for p in training.paths]
        manifest["training_features"] = save_features(version, features, training.labels, sources, featurizer.id)
    bundle = ModelBundle(version, featurizer.id, pca, classifier, manifest)
    test_dir = test_dir_beside(training_dir(data_dir))
    if evaluate and test_dir is not None:
        test = list_images(test_dir)
        test_features = featurize_files(test.paths, featurizer, "featurize test images")
        manifest["evaluation"] = {
            "path": str(test_dir),
            "images": len(test.paths),
            "top1_accuracy": round(accuracy(bundle, test_features, test.labels), 5),
        }
    return bundle

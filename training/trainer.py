"""Local trainer: labelled photos → model bundle.

The training set joins up to four sources (``TrainingData``):

- **Fruits-360** (``Training/<label>/*.jpg``): white-background specimens, one class per
  variety; they set the unsure threshold and are scored at variety level.
- **GroceryStore** (``train/<Fruit|Vegetables>/<coarse>/[<fine>/]*.jpg``): real phone photos
  in shops; each fine class is its own class (``GS:<coarse>/<fine>``) of its catalog type,
  the four classes outside the catalog are ``NOT_OURS``.
- **Synthetic photos** made of the Fruits-360 specimens (``training.synthetic``): cut out,
  pasted several at a time on blurred crops of GroceryStore photos or generated textures,
  jittered, blurred, JPEG-compressed; deterministic with the seed; never written to disk.
- **Empty scenes** (``NOT_OURS``): the same backgrounds without fruit.
- **Augmented copies** of the GroceryStore photos (``synthetic.augmented_photo``: crop, mirror,
  colour jitter; deterministic with the seed): trained on, never scored or calibrated on
  (``core.recipe``).

Every image goes through the services' preprocess and ONNX featurizer; the PCA comes from
mergeable statistics (k = fewest components reaching the explained-variance target); the
classifier, its calibration and its validation from ``core.recipe``; a ``Test`` split
beside ``Training`` is scored at the end.
"""

from __future__ import annotations

import functools
import io
import logging
import operator
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from core.catalog import GROCERYSTORE_GROUPS, grocerystore_path_type
from core.datasets import image_files, list_images, test_dir_beside, training_dir
from core.evaluation import Evaluation
from core.evaluation import evaluate as evaluate_bundle  # `evaluate` is train()'s flag
from core.featurizer import Featurizer
from core.imaging import preprocess
from core.manifest import Manifest, TrainedOn
from core.model import NOT_OURS, ModelBundle, PcaStats, new_version
from core.recipe import (
    AUGMENTED, COPY_MARK, EMPTY_SCENE, GROCERYSTORE, RECIPE, SYNTHETIC, Recipe, TrainingRows, fit_calibrated,
)
from training import synthetic

log = logging.getLogger(__name__)

FEATURIZE_BATCH = 64
SYNTHETIC_SIZE = 256
"""Side of a synthetic photo (it is preprocessed like any photo afterwards)."""

PIECES_PER_CLASS = 12
"""Specimen frames of a class that synthetic photos cut their pieces from."""

ImageSource = Callable[[], bytes]
"""Returns the encoded bytes of one training image, as a user would send them."""


@dataclass(frozen=True)
class TrainingData:
    fruits360: Path
    """Fruits-360 layout: the dataset root (holding ``Training/``) or that folder."""
    grocerystore: Path | None = None
    """GroceryStore layout: the dataset root (holding ``train/``) or that split folder."""
    synthetic_per_class: int = 0
    """Synthetic photos per Fruits-360 class (0: none)."""
    empty_scenes: int = 0
    """Scenes without fruit, as ``NOT_OURS`` examples (0: none)."""
    augmented_copies: int = 0
    """Augmented copies of each GroceryStore photo (0: none)."""
    per_class: int | None = None
    """At most this many Fruits-360 images per class (quick runs)."""
    seed: int = 0
    feedback: TrainingImages | None = None
    """Users' photos labelled by their feedback (``training.feedback``)."""

    def describe(self) -> str:
        parts = [str(self.fruits360)]
        if self.grocerystore is not None:
            parts.append(str(self.grocerystore))
            if self.augmented_copies:
                parts.append(f"{self.augmented_copies} augmented copies per photo (seed {self.seed})")
        if self.synthetic_per_class:
            parts.append(f"{self.synthetic_per_class} synthetic photos per class (seed {self.seed})")
        if self.empty_scenes:
            parts.append(f"{self.empty_scenes} empty scenes")
        if self.feedback is not None:
            parts.append(f"{len(self.feedback.images)} photos labelled by users' feedback")
        return " + ".join(parts)


@dataclass(frozen=True)
class TrainingImages:
    images: list[ImageSource]
    rows: TrainingRows


def grocerystore_split(root: Path) -> Path:
    return root / "train" if (root / "train").is_dir() else root


def fruits360_images(data: TrainingData) -> TrainingImages:
    found = list_images(training_dir(data.fruits360), data.per_class)
    return TrainingImages([p.read_bytes for p in found.paths], TrainingRows.of_specimens(
        found.labels, [str(p) for p in found.paths]))  # fmt: skip


def grocerystore_images(split: Path) -> TrainingImages:
    """Every photo of a GroceryStore split, its class ``GS:<coarse>/<fine>`` (or ``NOT_OURS``) and type."""
    paths = image_files([split])
    labels, types = [], []
    for path in paths:
        parts = path.relative_to(split).parts
        if parts[0] not in GROCERYSTORE_GROUPS:
            raise ValueError(f"{path}: not in the GroceryStore layout <split>/<Fruit|Vegetables>/<class>/…")
        fruit_type = grocerystore_path_type(parts)
        types.append(NOT_OURS if fruit_type is None else fruit_type)
        labels.append(NOT_OURS if fruit_type is None else "GS:" + "/".join(parts[1:-1]))
    if not paths:
        raise ValueError(f"no images in {split}")
    rows = TrainingRows(labels, types, [GROCERYSTORE] * len(paths), [str(p) for p in paths])
    return TrainingImages([p.read_bytes for p in paths], rows)


def augmented_copies(photos: TrainingImages, copies: int, seed: int) -> TrainingImages:
    """``copies`` augmented copies of each photo; copy k of photo i is made from its own random
    generator (seed, i, k), whatever order or thread makes it."""
    images: list[ImageSource] = []
    rows = photos.rows
    labels, types, sources = [], [], []
    for index, (image, label, fruit_type, source) in enumerate(zip(photos.images, rows.labels, rows.types, rows.sources)):
        for copy in range(copies):
            images.append(lambda read=image, i=index, k=copy: _jpeg(synthetic.augmented_photo(
                np.random.default_rng([seed, i, k]), Image.open(io.BytesIO(read())).convert("RGB")), quality=95))  # fmt: skip
            labels.append(label)
            types.append(fruit_type)
            sources.append(f"{source}{COPY_MARK}{copy}")
    return TrainingImages(images, TrainingRows(labels, types, [AUGMENTED] * len(labels), sources))


def synthetic_images(data: TrainingData, backgrounds: Sequence[Path]) -> TrainingImages:
    """``synthetic_per_class`` synthetic photos per Fruits-360 class and ``empty_scenes`` scenes
    without fruit; image i is made from its own random generator (seed, i): the same images
    whatever order or thread makes them."""
    specimens = list_images(training_dir(data.fruits360), data.per_class)
    by_class: dict[str, list[Path]] = {}
    for path, label in zip(specimens.paths, specimens.labels):
        by_class.setdefault(label, []).append(path)
    loaded = _Loaded(backgrounds)
    images: list[ImageSource] = []
    labels: list[str] = []
    for label, paths in by_class.items():
        pieces = paths[:: max(1, len(paths) // PIECES_PER_CLASS)][:PIECES_PER_CLASS]  # views from all around
        for _ in range(data.synthetic_per_class):
            index = len(images)
            images.append(lambda i=index, ps=pieces: _jpeg(synthetic.synthetic_photo(
                np.random.default_rng([data.seed, i]), [loaded.cutout(p) for p in ps], loaded.backgrounds(),
                SYNTHETIC_SIZE)))  # fmt: skip
            labels.append(label)
    rows = TrainingRows.of_specimens(labels, [f"synthetic:{data.seed}:{i}:{label}" for i, label in enumerate(labels)])
    rows = replace(rows, origins=[SYNTHETIC] * len(labels))
    for _ in range(data.empty_scenes):
        index = len(images)
        images.append(lambda i=index: _jpeg(synthetic.empty_scene(
            np.random.default_rng([data.seed, i]), loaded.backgrounds(), SYNTHETIC_SIZE)))  # fmt: skip
    count = data.empty_scenes
    rows += TrainingRows(
        [NOT_OURS] * count, [NOT_OURS] * count, [EMPTY_SCENE] * count,
        [f"empty:{data.seed}:{len(labels) + i}" for i in range(count)],
    )  # fmt: skip
    return TrainingImages(images, rows)


class _Loaded:
    """Cut-outs (decoded once, shared by the generating threads) and backgrounds (opened when
    drawn: a few hundred kilobytes each, too many to hold)."""

    def __init__(self, backgrounds: Sequence[Path]) -> None:
        self._cutouts: dict[Path, Image.Image] = {}
        self._backgrounds = _OpenedOnUse(list(backgrounds))

    def cutout(self, path: Path) -> Image.Image:
        if path not in self._cutouts:  # a race only decodes one twice
            self._cutouts[path] = synthetic.fruit_cutout(Image.open(path))
        return self._cutouts[path]

    def backgrounds(self) -> Sequence[Image.Image]:
        return self._backgrounds


class _OpenedOnUse(Sequence[Image.Image]):
    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index):  # type: ignore[override]
        return Image.open(self.paths[index]).convert("RGB")


def _jpeg(image: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def training_images(data: TrainingData) -> TrainingImages:
    parts = [fruits360_images(data)]
    backgrounds: list[Path] = []
    if data.grocerystore is not None:
        photos = grocerystore_images(grocerystore_split(data.grocerystore))
        parts.append(photos)
        if data.augmented_copies:
            parts.append(augmented_copies(photos, data.augmented_copies, data.seed))
        backgrounds = [Path(s) for s in photos.rows.sources]
    if data.synthetic_per_class or data.empty_scenes:
        parts.append(synthetic_images(data, backgrounds))
    if data.feedback is not None:
        parts.append(data.feedback)
    return TrainingImages(
        [image for part in parts for image in part.images], functools.reduce(operator.add, (p.rows for p in parts))
    )


def _batches(items: Sequence[ImageSource], size: int) -> Iterator[Sequence[ImageSource]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def featurize_images(images: Sequence[ImageSource], featurizer: Featurizer, description: str) -> np.ndarray:
    """Features of images, with a progress bar; reading (or making) and decoding overlap inference."""
    features = []
    with ThreadPoolExecutor(2) as decoder, tqdm(total=len(images), desc=description, unit="img") as bar:
        for batch in _batches(images, FEATURIZE_BATCH):
            tensors = list(decoder.map(lambda image: preprocess(image()), batch))
            features.append(featurizer(np.stack(tensors)))
            bar.update(len(batch))
    return np.concatenate(features)


def featurize_files(paths: Sequence[Path], featurizer: Featurizer, description: str) -> np.ndarray:
    return featurize_images([p.read_bytes for p in paths], featurizer, description)


SaveFeatures = Callable[[str, np.ndarray, TrainingRows, str], str]
"""``(version, features, rows, featurizer_id) → URI``: stores a bundle's labelled training
features (e.g. ``core.lake.training_features_writer``)."""


def train(
    data: TrainingData | Path,
    featurizer: Featurizer,
    min_explained_variance: float = 0.98,
    evaluate: bool = True,
    save_features: SaveFeatures | None = None,
    recipe: Recipe = RECIPE,
) -> ModelBundle:
    """Train a bundle on ``data`` (a path: Fruits-360 alone); if a ``Test`` split sits beside
    Fruits-360's ``Training``, score it and record the evaluation in the manifest. With
    ``save_features``, the labelled training features are stored and the manifest names them
    (``training_features``): the streaming job retrains the classifier on them (with the same
    recipe) when it publishes a new PCA."""
    data = data if isinstance(data, TrainingData) else TrainingData(data)
    started = time.perf_counter()
    training = training_images(data)
    rows = training.rows
    log.info("training on %d images of %d classes (%s)", len(rows.labels), len(set(rows.labels)), data.describe())
    features = featurize_images(training.images, featurizer, "featurize training images")
    stats = PcaStats.empty(features.shape[1])
    stats.add(features)
    pca = stats.fit(min_explained_variance)
    log.info("PCA: k=%d components explain %.1f %% of the variance", pca.k, 100 * pca.explained_variance_ratio.sum())
    classifier, calibration, validation = fit_calibrated(rows.labelled(pca.transform(features)), recipe)
    bundle = ModelBundle(new_version(), featurizer.id, pca, classifier)
    training_seconds = time.perf_counter() - started
    features_uri = None if save_features is None else save_features(bundle.version, features, rows, featurizer.id)
    test_dir = test_dir_beside(training_dir(data.fruits360))
    scored = evaluate_test(bundle, featurizer, test_dir) if evaluate and test_dir is not None else None
    manifest = Manifest.describe(
        bundle,
        trained_on=TrainedOn("local", data.describe(), len(rows.labels), len(set(rows.labels)), data.per_class),
        min_explained_variance=min_explained_variance,
        training_seconds=training_seconds,
        training_features=features_uri,
        evaluation=scored,
        evaluated_on=None if scored is None else str(test_dir),
        calibration=calibration,
        validation=validation,
    )
    return replace(bundle, manifest=manifest)


def evaluate_test(bundle: ModelBundle, featurizer: Featurizer, test_dir: Path) -> Evaluation:
    """The bundle's scores on the labelled images of ``test_dir`` (``<label>/*.jpg``)."""
    test = list_images(test_dir)
    return evaluate_bundle(bundle, featurize_files(test.paths, featurizer, "featurize test images"), test.labels)

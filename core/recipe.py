"""The training recipe, one for every trainer: the local trainer, the Spark trainer and the
streaming job's PCA refits all turn PCA projections of labelled photos into a calibrated
classifier here, so a refit goes through exactly what a fresh training goes through.

1. **Out-of-fold answers.** The rows are cut into ``folds`` folds (contiguous blocks within
   each class: consecutive Fruits-360 frames and GroceryStore photos of one bin are near
   duplicates, so they stay on one side); each fold is answered by a classifier trained on
   the others. Augmented copies of a photo sit in their photo's fold and are trained on,
   never answered: steps 2, 3 and 5 see real photos only.
2. **Temperature.** The one scalar T minimising the negative log-likelihood of the true
   class over the out-of-fold logits.
3. **Unsure threshold.** The type confidence under which an answer is ``unsure``: the
   largest threshold leaving at most ``max_specimen_unsure`` of the Fruits-360 specimens
   (out of fold) unsure. Photos that look like nothing of ours (the ``NOT_OURS`` class,
   trained on produce outside the catalog) are unsure whatever the threshold.
4. **Final classifier** on every row, with that T and threshold.
5. **Validation**: the out-of-fold answers scored (``core.evaluation.score``) — what the
   streaming job compares before it promotes a refit.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from core.evaluation import Evaluation, score
from core.manifest import Calibration
from core.model import Classifier, fit_classifier, softmax

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    regularisation: float = 0.3
    """Inverse L2 strength (scikit-learn's C) of the logistic regression (flat from 0.1 to 1 in CV)."""
    folds: int = 5
    max_specimen_unsure: float = 0.02
    """At most this share of Fruits-360 specimens (out of fold) is answered unsure."""
    max_iter: int = 500
    tol: float = 1e-4


RECIPE = Recipe()
"""The recipe every trainer uses (chosen by cross-validation: core/models/MODEL_CARD.md)."""


@dataclass(frozen=True)
class Labelled:
    """PCA projections of labelled photos, with what the recipe needs to know of each."""

    x: np.ndarray
    labels: Sequence[str]
    """Class of each row: a Fruits-360 label, a photo set's own class, or ``NOT_OURS``."""
    label_types: dict[str, str]
    """Fruit type of each class (``NOT_OURS`` for ``NOT_OURS``)."""
    specimen: np.ndarray
    """Rows that are Fruits-360 specimens (white background): they set the unsure threshold, and
    only they are scored at variety level (their label is a variety an answer can name)."""
    copy_of: np.ndarray | None = None
    """For an augmented copy, the row of the photo it was made from; -1 for every other row
    (None: no copies)."""

    def originals(self) -> np.ndarray:
        """Rows that are not augmented copies."""
        return np.ones(len(self.labels), bool) if self.copy_of is None else self.copy_of < 0


FRUITS360, GROCERYSTORE, SYNTHETIC, EMPTY_SCENE, AUGMENTED = "fruits360", "grocerystore", "synthetic", "empty", "augmented"
FEEDBACK = "feedback"
"""Where a training row comes from: a Fruits-360 specimen, a real photo of a photo set (its own
class, or NOT_OURS), a synthetic photo made of specimens, a scene without fruit (NOT_OURS), an
augmented copy of a real photo (its source: the photo's source + ``COPY_MARK`` + a number), a
user's photo with the type their feedback gave it (class ``FEEDBACK_CLASS`` + type)."""
FEEDBACK_CLASS = "FB:"
COPY_MARK = "#copy"


@dataclass(frozen=True)
class TrainingRows:
    """What is known of each training image besides its features (stored with them in the lake)."""

    labels: list[str]
    types: list[str]
    origins: list[str]
    sources: list[str]
    """Path or URI of the image, or how a synthetic one was made."""

    def __post_init__(self) -> None:
        if not len(self.labels) == len(self.types) == len(self.origins) == len(self.sources):
            raise ValueError("labels, types, origins and sources must be as long as each other")

    @classmethod
    def of_specimens(cls, labels: Sequence[str], sources: Sequence[str]) -> TrainingRows:
        """Fruits-360 specimens (their types from the catalog)."""
        from core.model import catalog_types

        return cls(list(labels), list(catalog_types(labels)), [FRUITS360] * len(labels), list(sources))

    def labelled(self, x: np.ndarray) -> Labelled:
        specimen = np.array([origin == FRUITS360 for origin in self.origins])
        label_types = dict(zip(self.labels, self.types))
        if AUGMENTED not in self.origins:
            return Labelled(x, self.labels, label_types, specimen)
        row_of = {source: row for row, (source, origin) in enumerate(zip(self.sources, self.origins)) if origin != AUGMENTED}
        copy_of = np.full(len(self.labels), -1, dtype=np.int64)
        for row, (source, origin) in enumerate(zip(self.sources, self.origins)):
            if origin == AUGMENTED:
                photo = source.rpartition(COPY_MARK)[0]
                if photo not in row_of:
                    raise ValueError(f"augmented copy {source!r} has no photo {photo!r} among the training rows")
                copy_of[row] = row_of[photo]
        return Labelled(x, self.labels, label_types, specimen, copy_of)

    def __add__(self, other: TrainingRows) -> TrainingRows:
        return TrainingRows(
            self.labels + other.labels, self.types + other.types, self.origins + other.origins,
            self.sources + other.sources,
        )  # fmt: skip


def fold_of_rows(labels: Sequence[str], folds: int) -> np.ndarray:
    """Fold of each row: within each class, in the given order, ``folds`` contiguous blocks."""
    fold = np.zeros(len(labels), dtype=np.int64)
    rows: dict[str, list[int]] = {}
    for index, label in enumerate(labels):
        rows.setdefault(label, []).append(index)
    for members in rows.values():
        for position, index in enumerate(members):
            fold[index] = position * folds // len(members)
    return fold


def fit_calibrated(data: Labelled, recipe: Recipe = RECIPE) -> tuple[Classifier, Calibration, Evaluation]:
    """The calibrated classifier of ``data``, its calibration and its out-of-fold validation."""
    labels = np.asarray(data.labels)
    classes = sorted(set(data.labels))
    types = tuple(data.label_types[c] for c in classes)
    original = data.originals()
    fold = np.empty(len(labels), dtype=np.int64)
    fold[original] = fold_of_rows(labels[original].tolist(), recipe.folds)
    if data.copy_of is not None:
        fold[~original] = fold[data.copy_of[~original]]  # a copy sits in its photo's fold
    answered = original.nonzero()[0]
    logits = np.full((len(answered), len(classes)), -1e4, dtype=np.float32)  # a class a fold lacks: never chosen
    for k in range(recipe.folds):
        held_out = fold == k
        if not held_out.any() or held_out.all():
            continue
        part = fit_classifier(data.x[~held_out], labels[~held_out], recipe.max_iter, recipe.regularisation, recipe.tol)
        columns = [classes.index(c) for c in part.labels]
        rows = fold[answered] == k
        logits[np.ix_(rows, columns)] = part.logits(data.x[answered[rows]])
        log.info("recipe: fold %d of %d answered (%d rows)", k + 1, recipe.folds, int(rows.sum()))
    truth = np.searchsorted(classes, labels[answered])
    temperature = fit_temperature(logits, truth)
    probe = Classifier(tuple(classes), np.zeros((len(classes), 1), np.float32), np.zeros(len(classes), np.float32),
                       types, temperature)  # fmt: skip  # only its answers() is used, on the OOF probabilities
    probabilities = softmax(logits / temperature)
    specimen = data.specimen[answered]
    specimen_confidences = [a.type_confidence for a, s in zip(probe.answers(probabilities), specimen) if s]
    threshold = unsure_threshold(specimen_confidences, recipe.max_specimen_unsure)
    validation = score(
        replace(probe, unsure_below=threshold).answers(probabilities),  # the classifier's own unsure rule
        [label if s else None for label, s in zip(labels[answered], specimen)],
        [data.label_types[label] for label in labels[answered]],
    )
    final = fit_classifier(data.x, labels, recipe.max_iter, recipe.regularisation, recipe.tol)
    final = replace(final, label_types=tuple(data.label_types[c] for c in final.labels),
                    temperature=temperature, unsure_below=threshold)  # fmt: skip
    calibration = Calibration(temperature, threshold, recipe.folds, recipe.max_specimen_unsure)
    log.info("recipe: T=%.3f, unsure below %.3f; out of fold: type top-1 %.4f, variety top-1 %.4f, unsure %.4f",
             temperature, threshold, validation.type_top1_accuracy, validation.top1_accuracy,
             validation.unsure_share)  # fmt: skip
    return final, calibration, validation


def fit_temperature(logits: np.ndarray, truth: np.ndarray) -> float:
    """The T in [0.2, 5] (log grid, then refined) minimising the NLL of ``truth`` under softmax(logits / T)."""

    def nll(t: float) -> float:
        p = softmax(logits / t)
        return float(-np.log(np.clip(p[np.arange(len(truth)), truth], 1e-12, None)).mean())

    grid = np.exp(np.linspace(np.log(0.2), np.log(5.0), 41))
    best = int(np.argmin([nll(t) for t in grid]))
    fine = np.exp(np.linspace(np.log(grid[max(best - 1, 0)]), np.log(grid[min(best + 1, len(grid) - 1)]), 21))
    return float(fine[int(np.argmin([nll(t) for t in fine]))])


def unsure_threshold(specimen_confidences: Sequence[float], max_unsure: float) -> float:
    """The largest threshold under which at most ``max_unsure`` of the confidences fall."""
    if not specimen_confidences:
        return 0.0
    ordered = np.sort(np.asarray(specimen_confidences, dtype=np.float64))
    allowed = int(np.floor(max_unsure * len(ordered)))  # this many may fall strictly below
    return float(ordered[allowed]) if allowed < len(ordered) else 1.0


def not_worse(candidate: Evaluation, current: Evaluation, tolerance: float) -> tuple[bool, str]:
    """Whether ``candidate``'s validation is not worse than ``current``'s on every score that
    matters (within ``tolerance``), and why not."""
    worse = []
    for name in ("type_top1_accuracy", "top1_accuracy", "foreign_unsure_share"):
        new, old = getattr(candidate, name), getattr(current, name)
        if not np.isnan(old) and (np.isnan(new) or new < old - tolerance):
            worse.append(f"{name} {new:.4f} < {old:.4f}")
    return not worse, "; ".join(worse) or "not worse on type top-1, variety top-1 and not-ours unsure share"

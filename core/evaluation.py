"""One evaluation of a model bundle on labelled feature vectors.

The local trainer (on the Test split), the Spark trainer (the same function on each
partition, the counts merged on the driver) and the streaming PCA updater (on the
labelled training features) all score a bundle with ``evaluate``, so their numbers
mean the same thing. Scores are kept as counts: partial evaluations merge exactly,
and the accuracies derive from them. To add a metric, add a count field to
``Evaluation`` and compute it in ``evaluate``; merging, the manifest's JSON and the
Spark trainer's schema follow the fields.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from core.model import ModelBundle

TOP_K = 5
"""The k of ``top5_correct``: a prediction counts if the true label is among the k most
probable classes (all of them when the classifier has fewer than k)."""


@dataclass(frozen=True)
class Evaluation:
    """How a bundle scores on labelled feature vectors (counts; every field is one)."""

    images: int = 0
    top1_correct: int = 0
    """Images whose most probable class is the true label."""
    top5_correct: int = 0
    """Images whose true label is among the ``TOP_K`` most probable classes."""

    def merge(self, other: Evaluation) -> Evaluation:
        return Evaluation(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def _rate(self, count: int) -> float:
        return count / self.images if self.images else math.nan

    @property
    def top1_accuracy(self) -> float:
        return self._rate(self.top1_correct)

    @property
    def top5_accuracy(self) -> float:
        return self._rate(self.top5_correct)

    def to_dict(self) -> dict[str, Any]:
        """The counts, and the accuracies (rounded; null without images) for people reading the JSON."""
        rates = {"top1_accuracy": self.top1_accuracy, "top5_accuracy": self.top5_accuracy}
        return {f.name: getattr(self, f.name) for f in fields(self)} | {
            name: None if math.isnan(rate) else round(rate, 5) for name, rate in rates.items()
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Evaluation:
        """Read the counts (derived and unknown keys are ignored)."""
        return cls(**{f.name: int(data[f.name]) for f in fields(cls) if f.name in data})


def evaluate(bundle: ModelBundle, features: np.ndarray, labels: Sequence[str]) -> Evaluation:
    """Score ``bundle`` (its PCA, then its classifier) on ``features`` (n, d) with true ``labels`` (n).
    A label the classifier does not know counts as wrong."""
    truth = np.asarray([str(label) for label in labels])
    if len(truth) == 0:
        return Evaluation()
    if len(features) != len(truth):
        raise ValueError(f"{len(features)} feature vectors but {len(truth)} labels")
    probabilities = bundle.classifier.predict_proba(bundle.pca.transform(features))
    classes = np.asarray(bundle.classifier.labels)
    k = min(TOP_K, len(classes))
    ranked = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]  # best first; ties: the first class
    hits = classes[ranked] == truth[:, None]
    return Evaluation(images=len(truth), top1_correct=int(hits[:, 0].sum()), top5_correct=int(hits.any(axis=1).sum()))

"""One evaluation of a model bundle on labelled photos (their feature vectors, or the
answers the pipeline gave for them): variety and fruit-type accuracy, how often it was
unsure, and how often photos of nothing in the catalog were answered unsure.

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
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    from core.model import Answer, ModelBundle


@dataclass(frozen=True)
class Evaluation:
    """How a bundle scores on labelled photos (counts; every field is one, so partial
    evaluations merge exactly). Variety counts cover the photos whose true label is a
    class of the classifier; type counts the photos whose true type is a catalog type;
    ``foreign`` counts the photos of nothing in the catalog (``NOT_OURS``)."""

    images: int = 0
    top1_correct: int = 0
    """Images whose answer names their true label."""
    top5_correct: int = 0
    """Images whose true label is among the answer's ``TOP_K`` varieties."""
    typed: int = 0
    """Images whose true type is a catalog type."""
    type_top1_correct: int = 0
    type_top5_correct: int = 0
    unsure: int = 0
    """Typed images answered unsure."""
    sure_correct: int = 0
    """Typed images answered sure and with the right type."""
    foreign: int = 0
    """Images of nothing in the catalog."""
    foreign_unsure: int = 0
    """… answered unsure, as they should be."""

    def merge(self, other: Evaluation) -> Evaluation:
        return Evaluation(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    @staticmethod
    def _rate(count: int, total: int) -> float:
        return count / total if total else math.nan

    @property
    def top1_accuracy(self) -> float:
        return self._rate(self.top1_correct, self.images)

    @property
    def top5_accuracy(self) -> float:
        return self._rate(self.top5_correct, self.images)

    @property
    def type_top1_accuracy(self) -> float:
        return self._rate(self.type_top1_correct, self.typed)

    @property
    def type_top5_accuracy(self) -> float:
        return self._rate(self.type_top5_correct, self.typed)

    @property
    def unsure_share(self) -> float:
        return self._rate(self.unsure, self.typed)

    @property
    def sure_accuracy(self) -> float:
        """Type accuracy on the typed images answered sure."""
        return self._rate(self.sure_correct, self.typed - self.unsure)

    @property
    def foreign_unsure_share(self) -> float:
        return self._rate(self.foreign_unsure, self.foreign)

    RATES: ClassVar[tuple[str, ...]] = (
        "top1_accuracy", "top5_accuracy", "type_top1_accuracy", "type_top5_accuracy", "unsure_share",
        "sure_accuracy", "foreign_unsure_share",
    )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """The counts, and the rates (rounded; null without images) for people reading the JSON."""
        rates = {name: getattr(self, name) for name in self.RATES}
        return {f.name: getattr(self, f.name) for f in fields(self)} | {
            name: None if math.isnan(rate) else round(rate, 5) for name, rate in rates.items()
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Evaluation:
        """Read the counts (derived and unknown keys are ignored; counts added later read as 0)."""
        return cls(**{f.name: int(data[f.name]) for f in fields(cls) if f.name in data})


def score(answers: Sequence[Answer], labels: Sequence[str | None], types: Sequence[str | None]) -> Evaluation:
    """Count ``answers`` against the true ``labels`` (None: no variety to check) and true
    ``types`` (a catalog type, ``NOT_OURS``, or None: no type to check)."""
    from core.model import NOT_OURS

    counts = dict.fromkeys((f.name for f in fields(Evaluation)), 0)
    for answer, label, true_type in zip(answers, labels, types, strict=True):
        if label is not None:
            counts["images"] += 1
            counts["top1_correct"] += answer.label == label
            counts["top5_correct"] += label in (name for name, _ in answer.top5)
        if true_type == NOT_OURS:
            counts["foreign"] += 1
            counts["foreign_unsure"] += answer.unsure
        elif true_type is not None:
            counts["typed"] += 1
            right = answer.fruit_type == true_type
            counts["type_top1_correct"] += right
            counts["type_top5_correct"] += true_type in (name for name, _ in answer.top5_types)
            counts["unsure"] += answer.unsure
            counts["sure_correct"] += right and not answer.unsure
    return Evaluation(**counts)


def evaluate(bundle: ModelBundle, features: np.ndarray, labels: Sequence[str]) -> Evaluation:
    """Score ``bundle`` (its PCA, then its classifier) on ``features`` (n, d) with true class
    ``labels`` (n). A label's type is the one the classifier gives it (the catalog's for a
    label it does not know); the variety is checked for the catalog's labels only."""
    from core.catalog import load_catalog
    from core.model import catalog_types

    truth = [str(label) for label in labels]
    if len(features) != len(truth):
        raise ValueError(f"{len(features)} feature vectors but {len(truth)} labels")
    if not truth:
        return Evaluation()
    classifier = bundle.classifier
    known = dict(zip(classifier.labels, classifier.label_types))
    types = [known[label] if label in known else catalog_types([label])[0] for label in truth]
    catalog = load_catalog()
    nameable = {label for label, named in zip(classifier.labels, classifier.variety_mask) if named}
    # A class that answers never name (NOT_OURS, a photo set's own classes) has no variety to
    # check; a label the classifier does not know at all counts, and is wrong.
    varieties = [label if label in nameable or label in catalog or label not in known else None for label in truth]
    answers = classifier.answers(classifier.predict_proba(bundle.pca.transform(features)))
    return score(answers, varieties, types)

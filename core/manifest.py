"""The manifest of a model bundle (``bundles/<version>/manifest.json``): one typed shape
for every producer — the local trainer, the Spark trainer and the streaming PCA updater.

Format 2 (``BUNDLE_FORMAT``)::

    {"format": 2, "version": "...", "featurizer_id": "...", "created_at": "2024-05-01T12:00:00Z",
     "pca": {"k": 57, "input_dim": 1280, "explained_variance": 0.98, "min_explained_variance": 0.98,
             "stream": null | {"topic": "...", "rows": 2000, "through_batch_id": 7}},
     "classifier": {"type": "multinomial_logistic_regression", "classes": 141},
     "trained_on": {"engine": "local" | "spark" | "streaming", "source": "<path or URI>",
                    "images": 6000, "classes": 141, "per_class_limit": null, "engine_detail": null},
     "training_seconds": 81.2,
     "training_features": null | "s3://...",        the labelled set the classifier was trained on
     "evaluation": null | {"images": .., "top1_correct": .., "top5_correct": ..,
                           "top1_accuracy": .., "top5_accuracy": ..},
     "evaluated_on": null | "<path or URI>",        held out (Test) for the trainers; for a
                                                    streaming refit its training features
     "parent_version": null | "...",                the bundle a streaming refit replaced
     "calibration": null | {"temperature": .., "unsure_below": .., "folds": 5, "max_specimen_unsure": 0.02},
     "validation": null | {<evaluation counts>}}    out-of-fold scores of the recipe (core.recipe)

The format is not a field of ``Manifest``: ``to_dict`` writes ``BUNDLE_FORMAT`` and
``from_dict`` refuses formats it cannot read, so no producer can write another one.
Unknown keys are ignored when reading (a later release may add optional fields; writers
only write through the dataclasses, so a misspelt key cannot be written).

Format 1 (before this manifest; the same ``pca.npz`` and ``classifier.npz``) is still
read: its three manifest shapes are converted to this one, except its evaluation (it
had no top-5), which is left out. Bundles are always written in format 2.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, is_dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from core.evaluation import Evaluation

if TYPE_CHECKING:
    from core.model import ModelBundle

BUNDLE_FORMAT = 2
LEGACY_FORMAT = 1
ENGINES = ("local", "spark", "streaming")
CLASSIFIER_TYPE = "multinomial_logistic_regression"


@dataclass(frozen=True)
class PcaStream:
    """Where a streaming refit's PCA was fitted: the features topic, through a micro-batch."""

    topic: str
    rows: int
    through_batch_id: int


@dataclass(frozen=True)
class PcaSummary:
    k: int
    input_dim: int
    explained_variance: float
    min_explained_variance: float
    """The target that chose k (the fewest components reaching it)."""
    stream: PcaStream | None = None
    """Set when the PCA was fitted on the features stream rather than on ``trained_on``."""


@dataclass(frozen=True)
class Calibration:
    """How the classifier's probabilities were calibrated (``core.recipe``)."""

    temperature: float
    unsure_below: float
    folds: int
    """Out-of-fold answers of this many folds chose both."""
    max_specimen_unsure: float


@dataclass(frozen=True)
class ClassifierSummary:
    type: str
    classes: int


@dataclass(frozen=True)
class TrainedOn:
    """The labelled images (or their features) the classifier — and, without a stream, the PCA — learnt from."""

    engine: str
    """``local`` (``fruits train``), ``spark`` (``--engine spark``) or ``streaming`` (a live PCA refit)."""
    source: str
    """Path or URI of the labelled images (the training features' URI for a streaming refit)."""
    images: int
    classes: int
    per_class_limit: int | None = None
    engine_detail: str | None = None
    """E.g. the Spark version and master."""

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"unknown training engine {self.engine!r} (one of {', '.join(ENGINES)})")


@dataclass(frozen=True)
class Manifest:
    format: ClassVar[int] = BUNDLE_FORMAT
    """Not a field: always the format this code writes."""

    version: str
    featurizer_id: str
    created_at: str | None
    """ISO 8601, UTC; None for a format-1 bundle whose version does not carry the time."""
    pca: PcaSummary
    classifier: ClassifierSummary
    trained_on: TrainedOn
    training_seconds: float
    """From the first image read to the fitted classifier (evaluation excluded)."""
    training_features: str | None = None
    evaluation: Evaluation | None = None
    evaluated_on: str | None = None
    parent_version: str | None = None
    calibration: Calibration | None = None
    """Temperature and unsure threshold, and how they were chosen (``core.recipe``); None before fruit types."""
    validation: Evaluation | None = None
    """Out-of-fold scores of the recipe on the training rows: what a streaming refit must not be worse than."""

    def __post_init__(self) -> None:
        if (self.evaluation is None) != (self.evaluated_on is None):
            raise ValueError("a manifest's evaluation and evaluated_on go together")

    @classmethod
    def describe(
        cls,
        bundle: ModelBundle,
        *,
        trained_on: TrainedOn,
        min_explained_variance: float,
        training_seconds: float,
        training_features: str | None = None,
        evaluation: Evaluation | None = None,
        evaluated_on: str | None = None,
        parent_version: str | None = None,
        pca_stream: PcaStream | None = None,
        calibration: Calibration | None = None,
        validation: Evaluation | None = None,
    ) -> Manifest:
        """The manifest of ``bundle`` (its version, featurizer, PCA and classifier summarised from the bundle itself)."""
        pca = bundle.pca
        return cls(
            version=bundle.version,
            featurizer_id=bundle.featurizer_id,
            created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            pca=PcaSummary(
                k=pca.k,
                input_dim=int(pca.mean.shape[0]),
                explained_variance=float(pca.explained_variance_ratio.sum()),
                min_explained_variance=min_explained_variance,
                stream=pca_stream,
            ),
            classifier=ClassifierSummary(CLASSIFIER_TYPE, len(bundle.classifier.labels)),
            trained_on=trained_on,
            training_seconds=round(training_seconds, 1),
            training_features=training_features,
            evaluation=evaluation,
            evaluated_on=evaluated_on,
            parent_version=parent_version,
            calibration=calibration,
            validation=validation,
        )

    def summary(self) -> str:
        """One line for people: PCA, classes, calibration and scores."""
        text = (
            f"bundle {self.version}: PCA k={self.pca.k} ({100 * self.pca.explained_variance:.1f} % of variance), "
            f"{self.classifier.classes} classes"
        )
        if self.calibration is not None:
            text += f", T={self.calibration.temperature:.2f}, unsure below {self.calibration.unsure_below:.2f}"
        if self.validation is not None:
            text += f"; out of fold: type top-1 {100 * self.validation.type_top1_accuracy:.1f} %"
        if self.evaluation is not None:
            e = self.evaluation
            text += f"; Test: variety top-1 {100 * e.top1_accuracy:.2f} %"
            text += f", unsure {100 * e.unsure_share:.1f} %"
        return text

    # --- JSON ---------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": BUNDLE_FORMAT}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Evaluation):
                value = value.to_dict()
            elif is_dataclass(value):
                value = asdict(value)
            out[f.name] = value
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        """Read a manifest of format 2, or convert one of format 1; ValueError for anything else."""
        found = data.get("format")
        if isinstance(found, bool) or found not in (LEGACY_FORMAT, BUNDLE_FORMAT):
            raise ValueError(
                f"manifest format {found!r}: this release reads formats {LEGACY_FORMAT} and {BUNDLE_FORMAT}"
            )
        try:
            return _from_format_1(data) if found == LEGACY_FORMAT else _from_format_2(data)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed format-{found} manifest: {exc!r}") from exc

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        return cls.from_dict(json.loads(text))


def _known(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    return {f.name: data[f.name] for f in fields(cls) if f.name in data}


def _from_format_2(data: Mapping[str, Any]) -> Manifest:
    pca = _known(PcaSummary, data["pca"])
    if pca.get("stream") is not None:
        pca["stream"] = PcaStream(**_known(PcaStream, pca["stream"]))
    evaluation, validation, calibration = data.get("evaluation"), data.get("validation"), data.get("calibration")
    return Manifest(**_known(Manifest, data) | {
        "pca": PcaSummary(**pca),
        "classifier": ClassifierSummary(**_known(ClassifierSummary, data["classifier"])),
        "trained_on": TrainedOn(**_known(TrainedOn, data["trained_on"])),
        "evaluation": None if evaluation is None else Evaluation.from_dict(evaluation),
        "validation": None if validation is None else Evaluation.from_dict(validation),
        "calibration": None if calibration is None else Calibration(**_known(Calibration, calibration)),
    })  # fmt: skip


def _time_of_version(version: str) -> str | None:
    try:
        return datetime.strptime(version[:16], "%Y%m%dT%H%M%SZ").strftime("%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return None


def _from_format_1(data: Mapping[str, Any]) -> Manifest:
    """The three shapes of format 1: local trainer, Spark trainer (``engine.name``), streaming
    refit (``trained_on`` split into ``pca`` from the stream and ``classifier``)."""
    trained_on, stream = data["trained_on"], None
    engine = data.get("engine", {}).get("name", "local")
    if "classifier" in trained_on:
        streamed = trained_on["pca"]
        stream = PcaStream(streamed["topic"], streamed["rows"], streamed["through_batch_id"])
        trained_on, engine = trained_on["classifier"], "streaming"
    pca = data["pca"]
    return Manifest(
        version=data["version"],
        featurizer_id=data["featurizer_id"],
        created_at=_time_of_version(data["version"]),
        pca=PcaSummary(
            pca["k"],
            pca["input_dim"],
            pca["explained_variance"],
            data["pca_selection"]["min_explained_variance"],
            stream,
        ),
        classifier=ClassifierSummary(data["classifier"]["type"], data["classifier"]["classes"]),
        trained_on=TrainedOn(
            engine, trained_on["path"], trained_on["images"], trained_on["classes"], data.get("per_class_limit")
        ),
        training_seconds=data["training_seconds"],
        training_features=data.get("training_features"),
        parent_version=data.get("previous_version"),
    )

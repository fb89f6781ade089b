"""``fruits evaluate DIR``: score a folder of labelled photos, through the running pipeline
or offline (featurizer and bundle in this process).

The truth of a photo comes from the folders above it:

- the GroceryStore layout (``…/Fruit|Vegetables/<coarse>/[<fine>/]photo.jpg``): its type
  through the catalog's mapping; its four classes outside the catalog are "not ours";
- a folder named by Fruits-360 label (``Apple Golden 1/``): that variety and its type;
- a folder named by type (``orange/``, ``bell_pepper/``): that type;
- a folder named ``not-a-fruit`` (what ``python -m tools.nonfruit`` writes): not ours.

Reported: variety and type top-1/top-5, per-type accuracy, the most frequent confusions,
the share answered unsure and the accuracy on the rest, the expected calibration error of
the type confidence, and the share of "not ours" photos answered unsure.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from core.catalog import GROCERYSTORE_GROUPS, folder_type, grocerystore_path_type, load_catalog
from core.datasets import IMAGE_SUFFIXES, image_files
from core.evaluation import Evaluation, score
from core.model import NOT_OURS, Answer
from core.records import Prediction
from core.settings import Settings

NOT_A_FRUIT_FOLDER = "not-a-fruit"
CALIBRATION_BINS = 10


@dataclass(frozen=True)
class Truth:
    label: str | None
    """The Fruits-360 variety, when the folder names one."""
    fruit_type: str
    """A catalog type, or ``NOT_OURS``."""


def truth_of(path: PurePath) -> Truth:
    """What a photo shows, from the folders above it; KeyError if they do not say."""
    if any(part in GROCERYSTORE_GROUPS for part in path.parts):
        found = grocerystore_path_type(path)
        return Truth(None, NOT_OURS if found is None else found)
    folder = path.parent.name
    if folder == NOT_A_FRUIT_FOLDER:
        return Truth(None, NOT_OURS)
    if folder in load_catalog():
        return Truth(folder, folder_type(folder))
    return Truth(None, folder_type(folder))


def labelled_photos(root: Path) -> list[tuple[Path, Truth]]:
    """Every image below ``root`` and its truth, in a stable order; a clear error naming the
    folders whose photos say nothing we can score."""
    if not root.is_dir():
        raise FileNotFoundError(f"no such folder: {root}")
    photos, unknown = [], Counter()
    for path in image_files([root]):
        try:
            photos.append((path, truth_of(path.relative_to(root.parent))))
        except KeyError:
            unknown[path.parent.relative_to(root).as_posix()] += 1
    if unknown:
        names = ", ".join(f"{name} ({count})" for name, count in unknown.most_common(8))
        raise ValueError(
            f"{sum(unknown.values())} photos in folders that name no fruit type, Fruits-360 label or "
            f"GroceryStore class: {names}"
        )
    if not photos:
        raise ValueError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) below {root}")
    return photos


def answer_of(prediction: Prediction) -> Answer:
    """The model fields of a Prediction (schema v1 ones have no type: never right on types)."""
    return Answer(
        label=prediction.label,
        confidence=prediction.confidence,
        top5=tuple((s.label, s.confidence) for s in prediction.top5),
        fruit_type=prediction.fruit_type or "",
        type_confidence=prediction.type_confidence or 0.0,
        top5_types=tuple((s.label, s.confidence) for s in prediction.top5_types),
        unsure=prediction.unsure,
    )


@dataclass
class Report:
    evaluation: Evaluation
    per_type: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    """True type → (photos, right, unsure)."""
    confusions: list[tuple[str, str, int]] = field(default_factory=list)
    """(true type, answered type, photos), most frequent first."""
    calibration_error: float = math.nan
    """Expected calibration error of the type confidence on the typed photos."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "evaluation": self.evaluation.to_dict(),
            "per_type": {t: {"photos": n, "right": r, "unsure": u} for t, (n, r, u) in self.per_type.items()},
            "confusions": [{"true": t, "answered": a, "photos": n} for t, a, n in self.confusions],
            "expected_calibration_error": None if math.isnan(self.calibration_error) else self.calibration_error,
        }


def report(answers: Sequence[Answer], truths: Sequence[Truth], most_confused: int = 10) -> Report:
    evaluation = score(answers, [t.label for t in truths], [t.fruit_type for t in truths])
    per_type: dict[str, list[int]] = {}
    confusions: Counter[tuple[str, str]] = Counter()
    for answer, truth in zip(answers, truths, strict=True):
        if truth.fruit_type == NOT_OURS:
            continue
        counts = per_type.setdefault(truth.fruit_type, [0, 0, 0])
        right = answer.fruit_type == truth.fruit_type
        counts[0] += 1
        counts[1] += right
        counts[2] += answer.unsure
        if not right:
            confusions[(truth.fruit_type, answer.fruit_type)] += 1
    typed = [(a, t) for a, t in zip(answers, truths) if t.fruit_type != NOT_OURS]
    return Report(
        evaluation,
        {t: (n, r, u) for t, (n, r, u) in sorted(per_type.items())},
        [(t, a, n) for (t, a), n in confusions.most_common(most_confused)],
        expected_calibration_error(
            [a.type_confidence for a, _ in typed], [a.fruit_type == t.fruit_type for a, t in typed]
        ),
    )


def expected_calibration_error(
    confidences: Sequence[float], correct: Sequence[bool], bins: int = CALIBRATION_BINS
) -> float:
    """Σ over equal-width confidence bins of (share of photos in the bin) × |accuracy − mean confidence|."""
    if not confidences:
        return math.nan
    total, error = len(confidences), 0.0
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        members = [i for i, c in enumerate(confidences) if low < c <= high or (b == 0 and c == 0)]
        if members:
            accuracy = sum(correct[i] for i in members) / len(members)
            confidence = sum(confidences[i] for i in members) / len(members)
            error += len(members) / total * abs(accuracy - confidence)
    return error


def render(report_: Report, title: str) -> str:
    e = report_.evaluation

    def pct(value: float) -> str:
        return "—" if math.isnan(value) else f"{100 * value:.1f} %"

    ece = "—" if math.isnan(report_.calibration_error) else f"{report_.calibration_error:.3f}"
    lines = [
        title,
        f"  variety top-1 / top-5     {pct(e.top1_accuracy)} / {pct(e.top5_accuracy)}  ({e.images} named by variety)",
        f"  type top-1 / top-5        {pct(e.type_top1_accuracy)} / {pct(e.type_top5_accuracy)}  ({e.typed} of types)",
        f"  answered unsure           {pct(e.unsure_share)}  (accuracy on the rest {pct(e.sure_accuracy)})",
        f"  calibration error (ECE)   {ece}",
        f"  not-ours photos unsure    {pct(e.foreign_unsure_share)}  ({e.foreign} of nothing in the catalog)",
    ]
    if report_.per_type:
        lines.append("  per type (photos, right, unsure):")
        for fruit_type, (n, right, unsure) in report_.per_type.items():
            lines.append(f"    {fruit_type:<16} {n:>5} {100 * right / n:6.1f} % {unsure:>5}")
    if report_.confusions:
        lines.append("  most confused (true → answered: photos):")
        lines += [f"    {t} → {a or '(none)'}: {n}" for t, a, n in report_.confusions]
    return "\n".join(lines)


def write_json(path: Path, reports: dict[str, Report]) -> None:
    path.write_text(json.dumps({name: r.to_dict() for name, r in reports.items()}, indent=2))


def offline_answers(settings: Settings, paths: Sequence[Path], bundle_version: str | None) -> tuple[str, list[Answer]]:
    """Answers of the bundle (the current one by default) for ``paths``, computed here with the
    same preprocess, featurizer and classifier code as the services."""
    from core.featurizer import Featurizer
    from core.model import ModelStore
    from core.s3 import check_bucket, s3_client
    from training.trainer import featurize_files

    client = s3_client(settings)
    check_bucket(client, settings.model_bucket, settings.s3_endpoint_url)
    store = ModelStore(client, settings.model_bucket)
    version = bundle_version or store.current_version()
    if version is None:
        raise ValueError(f"no current bundle in s3://{settings.model_bucket}: train one (`fruits train`)")
    bundle = store.load(version)
    featurizer = Featurizer(settings.featurizer_path)
    if featurizer.id != bundle.featurizer_id:
        raise ValueError(f"bundle {version} was trained on featurizer {bundle.featurizer_id}, not {featurizer.id}")
    features = featurize_files(paths, featurizer, "featurize")
    classifier = bundle.classifier
    return version, classifier.answers(classifier.predict_proba(bundle.pca.transform(features)))


def pipeline_answers(settings: Settings, paths: Sequence[Path], rate: float | None) -> dict[Path, Answer]:
    """Answers of the running pipeline: each photo sent as a photo event, its prediction read back."""
    from core.kafka import check_reachable
    from core.photos import new_photo_id
    from tools.roundtrip import round_trip

    check_reachable(settings)
    photos = [(new_photo_id(), path) for path in paths]
    result = round_trip(settings, photos, rate=rate, progress="evaluate through the pipeline")
    path_of = dict(photos)
    return {path_of[photo_id]: answer_of(found[0]) for photo_id, found in result.predictions.items()}


def run_evaluate(settings: Settings, roots: Sequence[Path], offline: bool, bundle: str | None,
                 rate: float | None, json_path: Path | None) -> int:  # fmt: skip
    reports: dict[str, Report] = {}
    for root in roots:
        photos = labelled_photos(root)
        paths, truths = [p for p, _ in photos], [t for _, t in photos]
        if offline:
            version, answers = offline_answers(settings, paths, bundle)
            title = f"{root}: {len(paths)} photos, offline, bundle {version}"
        else:
            by_path = pipeline_answers(settings, paths, rate)
            missing = len(paths) - len(by_path)
            truths = [t for p, t in photos if p in by_path]
            answers = [by_path[p] for p in paths if p in by_path]
            title = f"{root}: {len(paths)} photos through the pipeline" + (
                f", {missing} without a prediction" if missing else ""
            )
        reports[str(root)] = report(answers, truths)
        print(render(reports[str(root)], title), flush=True)
    if json_path is not None:
        write_json(json_path, reports)
    return 0

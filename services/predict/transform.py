"""Pure predict logic: ReducedFeatures become Predictions, using the classifier of the
same bundle as the PCA that reduced them (they were trained together)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict
from datetime import datetime

import numpy as np

from core.catalog import TypeFacts
from core.errors import Reason, RecordError, map_valid
from core.model import Answer, ModelBundle
from core.records import FruitInfo, ModelVersions, NutritionPer100g, Prediction, ReducedFeatures, ScoredLabel


def fruit_info(facts: TypeFacts | None) -> FruitInfo | None:
    if facts is None:
        return None
    return FruitInfo(
        common_name=facts.common_name,
        nutrition=NutritionPer100g(**asdict(facts.nutrition)),
        storage_advice=facts.storage_advice,
        sources=list(facts.sources),
    )


def predict_batch(
    records: list[ReducedFeatures],
    bundle_of: Callable[[str], ModelBundle],
    types: Mapping[str, TypeFacts],
    now: datetime,
) -> list[Prediction | RecordError]:
    """``bundle_of(version)`` returns the bundle named by a record's ``pca_version``
    (raising RecordError if there is none); ``types`` gives the facts of each fruit type."""

    def check(record: ReducedFeatures) -> tuple[ReducedFeatures, ModelBundle]:
        bundle = bundle_of(record.pca_version)
        if len(record.features) != bundle.pca.k:
            raise RecordError(
                Reason.BAD_FEATURES,
                f"{len(record.features)} reduced features, bundle {record.pca_version} has k={bundle.pca.k}",
            )
        return record, bundle

    def predict(checked: list[tuple[ReducedFeatures, ModelBundle]]) -> list[Prediction]:
        # One classifier call per bundle: during a rollout a batch may mix two.
        rows_of: dict[str, list[int]] = {}
        for index, (_, bundle) in enumerate(checked):
            rows_of.setdefault(bundle.version, []).append(index)
        predictions: list[Prediction | None] = [None] * len(checked)
        for rows in rows_of.values():
            bundle = checked[rows[0]][1]
            probabilities = bundle.classifier.predict_proba(np.array([checked[i][0].features for i in rows]))
            for index, answer in zip(rows, bundle.classifier.answers(probabilities)):
                predictions[index] = prediction_of(checked[index][0], bundle.version, answer, types, now)
        return predictions  # type: ignore[return-value]  # every index is in exactly one group

    return map_valid(records, check, predict)


def prediction_of(
    record: ReducedFeatures, bundle_version: str, answer: Answer, types: Mapping[str, TypeFacts], now: datetime
) -> Prediction:
    """The Prediction of ``answer``; a sure answer carries the facts of its fruit type."""
    return Prediction(
        photo=record.photo,
        predicted_at=now,
        label=answer.label,
        confidence=answer.confidence,
        top5=[ScoredLabel(label, p) for label, p in answer.top5],
        model_versions=ModelVersions(record.featurizer_id, record.pca_version, bundle_version),
        fruit_type=answer.fruit_type,
        type_confidence=answer.type_confidence,
        top5_types=[ScoredLabel(fruit_type, p) for fruit_type, p in answer.top5_types],
        unsure=answer.unsure,
        fruit=None if answer.unsure else fruit_info(types.get(answer.fruit_type)),
    )

"""Pure predict logic: ReducedFeatures become Predictions, using the classifier of the
same bundle as the PCA that reduced them (they were trained together)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from typing import Any

import numpy as np

from core.catalog import FruitFacts
from core.errors import RecordError
from core.model import ModelBundle

TOP_K = 5


def fruit_info(facts: FruitFacts | None) -> dict[str, Any] | None:
    if facts is None:
        return None
    return {
        "common_name": facts.common_name,
        "nutrition": asdict(facts.nutrition),
        "storage_advice": facts.storage_advice,
        "sources": list(facts.sources),
    }


def predict_batch(
    records: list[dict[str, Any]],
    bundle_of: Callable[[str], ModelBundle],
    catalog: dict[str, FruitFacts],
    now: datetime,
) -> list[dict[str, Any] | RecordError]:
    """``bundle_of(version)`` returns the bundle named by a record's ``pca_version``
    (raising RecordError if there is none)."""
    outcomes: list[dict[str, Any] | RecordError | None] = [None] * len(records)
    by_version: dict[str, list[int]] = {}
    for index, record in enumerate(records):
        by_version.setdefault(record["pca_version"], []).append(index)
    for version, indices in by_version.items():
        try:
            bundle = bundle_of(version)
        except RecordError as error:
            for index in indices:
                outcomes[index] = error
            continue
        k = bundle.pca.k
        for index in indices:
            if len(records[index]["features"]) != k:
                outcomes[index] = RecordError(
                    "bad_features", f"{len(records[index]['features'])} reduced features, bundle {version} has k={k}"
                )
        good = [i for i in indices if len(records[i]["features"]) == k]
        if not good:
            continue
        probabilities = bundle.classifier.predict_proba(np.array([records[i]["features"] for i in good]))
        labels = bundle.classifier.labels
        for index, row in zip(good, probabilities):
            top = np.argsort(row)[::-1][:TOP_K]
            record = records[index]
            outcomes[index] = {
                "photo_id": record["photo_id"],
                "user_id": record["user_id"],
                "captured_at": record["captured_at"],
                "received_at": record["received_at"],
                "predicted_at": now,
                "region": record["region"],
                "original_uri": record["original_uri"],
                "label": labels[top[0]],
                "confidence": float(row[top[0]]),
                "top5": [{"label": labels[i], "confidence": float(row[i])} for i in top],
                "model_versions": {
                    "featurizer_id": record["featurizer_id"],
                    "pca_version": version,
                    "classifier_version": bundle.version,
                },
                "fruit": fruit_info(catalog.get(labels[top[0]])),
            }
    if any(outcome is None for outcome in outcomes):
        raise AssertionError("predict_batch left a record without an outcome")
    return outcomes  # type: ignore[return-value]

"""Pure reduce logic: PhotoFeatures become ReducedFeatures with the given PCA."""

from __future__ import annotations

from typing import Any

import numpy as np

from core.errors import RecordError
from core.model import Pca


def reduce_batch(records: list[dict[str, Any]], pca: Pca, pca_version: str) -> list[dict[str, Any] | RecordError]:
    dim = pca.mean.shape[0]
    outcomes: list[dict[str, Any] | RecordError] = [
        record if len(record["features"]) == dim else RecordError(
            "bad_features", f"{len(record['features'])} features, the PCA {pca_version} expects {dim}"
        )
        for record in records
    ]
    good = [outcome for outcome in outcomes if not isinstance(outcome, RecordError)]
    reduced = iter(pca.transform(np.array([r["features"] for r in good], dtype=np.float32)) if good else [])
    return [
        outcome
        if isinstance(outcome, RecordError)
        else {**outcome, "pca_version": pca_version, "features": next(reduced).tolist()}
        for outcome in outcomes
    ]

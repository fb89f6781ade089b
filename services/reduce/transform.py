"""Pure reduce logic: PhotoFeatures become ReducedFeatures with the given PCA."""

from __future__ import annotations

import numpy as np

from core.errors import Reason, RecordError, map_valid
from core.model import Pca
from core.records import PhotoFeatures, ReducedFeatures


def reduce_batch(records: list[PhotoFeatures], pca: Pca, pca_version: str) -> list[ReducedFeatures | RecordError]:
    dim = pca.mean.shape[0]

    def check(record: PhotoFeatures) -> PhotoFeatures:
        if len(record.features) != dim:
            raise RecordError(
                Reason.BAD_FEATURES, f"{len(record.features)} features, the PCA {pca_version} expects {dim}"
            )
        return record

    def reduce(valid: list[PhotoFeatures]) -> list[ReducedFeatures]:
        reduced = pca.transform(np.array([r.features for r in valid], dtype=np.float32))
        return [
            ReducedFeatures(r.photo, r.featurizer_id, pca_version, vector.tolist()) for r, vector in zip(valid, reduced)
        ]

    return map_valid(records, check, reduce)

"""Pure featurize logic: a batch of PreprocessedPhoto becomes PhotoFeatures, in one model call."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from core.errors import Reason, RecordError, map_valid
from core.imaging import MODEL_INPUT_SIZE
from core.records import PhotoFeatures, PreprocessedPhoto

EXPECTED_SHAPE = [MODEL_INPUT_SIZE, MODEL_INPUT_SIZE, 3]


def tensor_of(record: PreprocessedPhoto) -> np.ndarray:
    if record.shape != EXPECTED_SHAPE:
        raise RecordError(Reason.BAD_TENSOR, f"tensor shape {record.shape} is not the model's {EXPECTED_SHAPE}")
    if len(record.tensor) != np.prod(EXPECTED_SHAPE):
        raise RecordError(Reason.BAD_TENSOR, f"{len(record.tensor)} tensor bytes do not fill shape {EXPECTED_SHAPE}")
    return np.frombuffer(record.tensor, dtype=np.uint8).reshape(EXPECTED_SHAPE)


def featurize_batch(
    records: list[PreprocessedPhoto], featurizer: Callable[[np.ndarray], np.ndarray], featurizer_id: str
) -> list[PhotoFeatures | RecordError]:
    def featurize(checked: list[tuple[PreprocessedPhoto, np.ndarray]]) -> list[PhotoFeatures]:
        features = featurizer(np.stack([tensor for _, tensor in checked]))
        return [
            PhotoFeatures(record.photo, featurizer_id, vector.tolist())
            for (record, _), vector in zip(checked, features)
        ]

    return map_valid(records, lambda record: (record, tensor_of(record)), featurize)

"""Pure featurize logic: a batch of PreprocessedPhoto becomes PhotoFeatures, in one model call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from core.errors import RecordError
from core.imaging import MODEL_INPUT_SIZE

EXPECTED_SHAPE = [MODEL_INPUT_SIZE, MODEL_INPUT_SIZE, 3]


def tensor_of(record: dict[str, Any]) -> np.ndarray:
    if record["shape"] != EXPECTED_SHAPE:
        raise RecordError("bad_tensor", f"tensor shape {record['shape']} is not the model's {EXPECTED_SHAPE}")
    if len(record["tensor"]) != np.prod(EXPECTED_SHAPE):
        raise RecordError("bad_tensor", f"{len(record['tensor'])} tensor bytes do not fill shape {EXPECTED_SHAPE}")
    return np.frombuffer(record["tensor"], dtype=np.uint8).reshape(EXPECTED_SHAPE)


def featurize_batch(
    records: list[dict[str, Any]], featurizer: Callable[[np.ndarray], np.ndarray], featurizer_id: str
) -> list[dict[str, Any] | RecordError]:
    outcomes: list[dict[str, Any] | RecordError] = []
    tensors = []
    for record in records:
        try:
            tensors.append(tensor_of(record))
            outcomes.append(record)
        except RecordError as error:
            outcomes.append(error)
    features = iter(featurizer(np.stack(tensors)) if tensors else [])
    return [
        outcome
        if isinstance(outcome, RecordError)
        else {
            "photo_id": outcome["photo_id"],
            "user_id": outcome["user_id"],
            "captured_at": outcome["captured_at"],
            "received_at": outcome["received_at"],
            "region": outcome["region"],
            "original_uri": outcome["original_uri"],
            "featurizer_id": featurizer_id,
            "features": next(features).tolist(),
        }
        for outcome in outcomes
    ]

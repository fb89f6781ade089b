"""Pure preprocess logic: an IngestedPhoto becomes a PreprocessedPhoto."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from core.imaging import MODEL_INPUT_SIZE, preprocess


def preprocess_photo(
    ingested: dict[str, Any], read_original: Callable[[str], bytes], size: int = MODEL_INPUT_SIZE
) -> dict[str, Any]:
    """Tensor of the photo, read inline or (large photos) from its stored original."""
    data = ingested["image"] if ingested["image"] is not None else read_original(ingested["original_uri"])
    tensor = preprocess(data, size)
    return {
        "photo_id": ingested["photo_id"],
        "user_id": ingested["user_id"],
        "captured_at": ingested["captured_at"],
        "received_at": ingested["received_at"],
        "region": ingested["region"],
        "original_uri": ingested["original_uri"],
        "tensor": tensor.tobytes(),
        "shape": list(tensor.shape),
    }

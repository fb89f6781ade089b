"""Pure preprocess logic: an IngestedPhoto becomes a PreprocessedPhoto."""

from __future__ import annotations

from collections.abc import Callable

from core.imaging import MODEL_INPUT_SIZE, preprocess
from core.records import IngestedPhoto, PreprocessedPhoto


def preprocess_photo(
    ingested: IngestedPhoto, read_original: Callable[[str], bytes], size: int = MODEL_INPUT_SIZE
) -> PreprocessedPhoto:
    """Tensor of the photo, read inline or (large photos) from its stored original."""
    data = ingested.image if ingested.image is not None else read_original(ingested.photo.original_uri)
    tensor = preprocess(data, size)
    return PreprocessedPhoto(ingested.photo, tensor=tensor.tobytes(), shape=list(tensor.shape))

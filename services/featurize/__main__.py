"""Run the featurize service: ``python -m services.featurize`` (settings: FRUITS_* variables)."""

from __future__ import annotations

from collections.abc import Callable

from core import metrics
from core.featurizer import Featurizer
from core.imaging import MODEL_INPUT_SIZE
from core.kafka import Stage, run_stage
from core.records import PhotoFeatures, PreprocessedPhoto
from core.settings import Settings, get_settings
from services.featurize.transform import featurize_batch


def build_stage(settings: Settings) -> Stage[PreprocessedPhoto, PhotoFeatures]:
    featurizer = Featurizer(settings.featurizer_path, settings.onnx_threads)

    def start(stop: Callable[[], bool]) -> None:
        featurizer.check_input_size(MODEL_INPUT_SIZE)  # preprocess makes this size: refuse another model
        featurizer.warm_up(settings.max_batch_records)  # memory at its working size from the start
        metrics.ModelMetrics("featurize", settings.metrics_enabled).use("featurizer", featurizer.id)

    return Stage(
        name="featurize",
        input_topic=settings.topic_preprocessed,
        input_type=PreprocessedPhoto,
        output_topic=settings.topic_features,
        transform=lambda batch: featurize_batch([r.record for r in batch], featurizer, featurizer.id),
        on_start=start,
    )


if __name__ == "__main__":
    settings = get_settings().acting_as("featurize")
    run_stage(build_stage(settings), settings)

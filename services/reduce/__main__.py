"""Run the reduce service: ``python -m services.reduce`` (settings: FRUITS_* variables)."""

from __future__ import annotations

from core import metrics
from core.errors import RecordError
from core.kafka import Received, Stage, run_stage
from core.model import CurrentBundle, ModelStore
from core.records import PhotoFeatures, ReducedFeatures
from core.s3 import s3_client
from core.settings import Settings, get_settings
from services.reduce.transform import reduce_batch


def build_stage(settings: Settings) -> Stage[PhotoFeatures, ReducedFeatures]:
    current = CurrentBundle(ModelStore(s3_client(settings), settings.model_bucket), settings.model_refresh_seconds)
    models = metrics.ModelMetrics("reduce", settings.metrics_enabled)

    def transform(batch: list[Received[PhotoFeatures]]) -> list[ReducedFeatures | RecordError]:
        bundle = current.get()
        assert bundle is not None, "on_start waited for a bundle"
        models.use_pca(bundle.version, bundle.pca.explained_variance_ratio)
        return reduce_batch([r.record for r in batch], bundle.pca, bundle.version)

    return Stage(
        name="reduce",
        input_topic=settings.topic_features,
        input_type=PhotoFeatures,
        output_topic=settings.topic_reduced,
        transform=transform,
        on_start=current.wait,
    )


if __name__ == "__main__":
    settings = get_settings().acting_as("reduce")
    run_stage(build_stage(settings), settings)

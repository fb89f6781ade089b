"""Run the predict service: ``python -m services.predict`` (settings: FRUITS_* variables)."""

from __future__ import annotations

from datetime import datetime, timezone

from core import metrics
from core.catalog import load_types
from core.errors import RecordError
from core.kafka import Received, Stage, run_stage
from core.model import BundlesByVersion, ModelStore
from core.records import Prediction, ReducedFeatures
from core.s3 import s3_client
from core.settings import Settings, get_settings
from services.predict.transform import predict_batch


def build_stage(settings: Settings) -> Stage[ReducedFeatures, Prediction]:
    bundles = BundlesByVersion(ModelStore(s3_client(settings), settings.model_bucket))
    types = load_types()
    models = metrics.ModelMetrics("predict", settings.metrics_enabled)
    predictions = metrics.PredictionMetrics(settings.metrics_enabled)

    def transform(batch: list[Received[ReducedFeatures]]) -> list[Prediction | RecordError]:
        now = datetime.now(timezone.utc)
        outcomes = predict_batch([r.record for r in batch], bundles.get, types, now)
        good = [outcome for outcome in outcomes if not isinstance(outcome, RecordError)]
        if good:  # during a rollout a batch may mix bundles: the last one is reported
            models.use("classifier", good[-1].model_versions.classifier_version)
        predictions.observe(good, now)
        return outcomes

    return Stage(
        name="predict",
        input_topic=settings.topic_reduced,
        input_type=ReducedFeatures,
        output_topic=settings.topic_predictions,
        transform=transform,
        observes_hops=True,
    )


if __name__ == "__main__":
    settings = get_settings().acting_as("predict")
    run_stage(build_stage(settings), settings)

"""The predict service with a bug that one photo triggers: its transform raises on any batch
holding the photo named by POISONED_PHOTO_ID. test_faults runs it instead of the real one
(``python -m tests.integration.poisoned_predict``) to show that a poison record ends as one
``internal_error`` dead letter, not a crash loop."""

from __future__ import annotations

import dataclasses
import os

from core.kafka import Received, run_stage
from core.errors import RecordError
from core.records import Prediction, ReducedFeatures, photo_id_of
from core.settings import get_settings
from services.predict.__main__ import build_stage

ENV = "POISONED_PHOTO_ID"


class Poisoned(RuntimeError):
    """The bug: raised for every batch that holds the poisoned photo."""


def main() -> None:
    poisoned = os.environ[ENV]
    settings = get_settings().acting_as("predict")
    stage = build_stage(settings)
    transform = stage.transform

    def poisoned_transform(batch: list[Received[ReducedFeatures]]) -> list[Prediction | RecordError]:
        if any(photo_id_of(item.record) == poisoned for item in batch):
            raise Poisoned(f"a bug triggered by photo {poisoned}")
        return list(transform(batch))

    run_stage(dataclasses.replace(stage, transform=poisoned_transform), settings)


if __name__ == "__main__":
    main()

"""Run the preprocess service: ``python -m services.preprocess`` (settings: FRUITS_* variables)."""

from __future__ import annotations

from core.kafka import Stage, per_record, run_stage
from core.records import IngestedPhoto, PreprocessedPhoto
from core.s3 import read_object, s3_client
from core.settings import Settings, get_settings
from services.preprocess.transform import preprocess_photo


def build_stage(settings: Settings) -> Stage[IngestedPhoto, PreprocessedPhoto]:
    client = s3_client(settings)

    def read_original(uri: str) -> bytes:
        return read_object(client, uri, settings.max_image_bytes)

    return Stage(
        name="preprocess",
        input_topic=settings.topic_ingested,
        input_type=IngestedPhoto,
        output_topic=settings.topic_preprocessed,
        transform=per_record(lambda r: preprocess_photo(r.record, read_original)),
    )


if __name__ == "__main__":
    settings = get_settings().acting_as("preprocess")
    run_stage(build_stage(settings), settings)

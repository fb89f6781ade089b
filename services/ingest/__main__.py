"""Run the ingest service: ``python -m services.ingest`` (settings: FRUITS_* variables)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from core.errors import RecordError, map_valid
from core.kafka import Received, Stage, run_stage
from core.records import IngestedPhoto, PhotoEvent
from core.s3 import read_object, s3_client
from core.settings import Settings, get_settings
from services.ingest.transform import IngestPolicy, Original, ingest_photo

S3_UPLOAD_THREADS = 8
"""Originals of one batch are stored concurrently: S3 latency, not CPU, bounds ingest."""


def build_stage(settings: Settings) -> Stage[PhotoEvent, IngestedPhoto]:
    policy = IngestPolicy(
        max_image_bytes=settings.max_image_bytes,
        max_inline_image_bytes=settings.max_inline_image_bytes,
        max_image_pixels=settings.max_image_pixels,
        region_buckets=settings.region_buckets,
    )
    client = s3_client(settings)
    uploads = ThreadPoolExecutor(S3_UPLOAD_THREADS, thread_name_prefix="s3-put")

    def read_uri(uri: str, max_bytes: int) -> bytes:
        return read_object(client, uri, max_bytes)

    def store(original: Original) -> None:
        client.put_object(
            Bucket=original.bucket, Key=original.key, Body=original.data, ContentType=original.content_type
        )

    def store_all(checked: list[tuple[IngestedPhoto, Original]]) -> list[IngestedPhoto]:
        # Any S3 failure raises here: the batch is not committed and is retried after a restart.
        list(uploads.map(store, [original for _, original in checked]))
        return [record for record, _ in checked]

    def transform(batch: list[Received[PhotoEvent]]) -> list[IngestedPhoto | RecordError]:
        return map_valid(batch, lambda r: ingest_photo(r.record, r.timestamp, policy, read_uri), store_all)

    return Stage(
        name="ingest",
        input_topic=settings.topic_photos,
        input_type=PhotoEvent,
        output_topic=settings.topic_ingested,
        transform=transform,
    )


if __name__ == "__main__":
    settings = get_settings().acting_as("ingest")
    run_stage(build_stage(settings), settings)

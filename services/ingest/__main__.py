"""Run the ingest service: ``python -m services.ingest`` (settings: FRUITS_* variables)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from core.avro import INGESTED_PHOTO, PHOTO_EVENT, avro_type
from core.kafka import Outcome, Received, Stage, per_record, run_stage
from core.s3 import read_object, s3_client
from core.settings import Settings, get_settings
from services.ingest.transform import IngestPolicy, Original, ingest_photo

S3_UPLOAD_THREADS = 8
"""Originals of one batch are stored concurrently: S3 latency, not CPU, bounds ingest."""


def build_stage(settings: Settings) -> Stage:
    policy = IngestPolicy(
        max_image_bytes=settings.max_image_bytes,
        max_inline_image_bytes=settings.max_inline_image_bytes,
        max_image_pixels=settings.max_image_pixels,
        region_buckets=settings.region_buckets,
    )
    client = s3_client(settings)
    uploads = ThreadPoolExecutor(S3_UPLOAD_THREADS, thread_name_prefix="s3-put")
    check = per_record(lambda r: ingest_photo(r.record, r.timestamp, policy, lambda uri, n: read_object(client, uri, n)))

    def store(original: Original) -> None:
        client.put_object(
            Bucket=original.bucket, Key=original.key, Body=original.data, ContentType=original.content_type
        )

    def transform(batch: list[Received]) -> list[Outcome]:
        checked = check(batch)
        originals = [outcome[1] for outcome in checked if isinstance(outcome, tuple)]
        # Any S3 failure raises here: the batch is not committed and is retried after a restart.
        list(uploads.map(store, originals))
        return [outcome[0] if isinstance(outcome, tuple) else outcome for outcome in checked]

    return Stage(
        name="ingest",
        input_topic=settings.topic_photos,
        input_type=avro_type(PHOTO_EVENT),
        output_topic=settings.topic_ingested,
        output_type=avro_type(INGESTED_PHOTO),
        transform=transform,
    )


if __name__ == "__main__":
    settings = get_settings()
    run_stage(build_stage(settings), settings)

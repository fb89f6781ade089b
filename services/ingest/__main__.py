"""Run the ingest service: ``python -m services.ingest`` (settings: FRUITS_* variables)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from botocore.exceptions import ClientError

from core.errors import RecordError, map_valid
from core.kafka import Received, Stage, run_stage
from core.records import IngestedPhoto, PhotoEvent
from core.s3 import read_object, s3_client, s3_dependency
from core.settings import Settings, get_settings
from services.ingest.transform import IngestPolicy, Original, StoredOriginal, ingest_photo, new_originals

S3_THREADS = 8
"""A batch's originals are looked up and stored concurrently: S3 latency, not CPU, bounds ingest."""
SHA256, SOURCE = "sha256", "source"
"""Object metadata of a stored original (x-amz-meta-…): see services.ingest.transform."""


def build_stage(settings: Settings) -> Stage[PhotoEvent, IngestedPhoto]:
    policy = IngestPolicy(
        max_image_bytes=settings.max_image_bytes,
        max_inline_image_bytes=settings.max_inline_image_bytes,
        max_image_pixels=settings.max_image_pixels,
        region_buckets=settings.region_buckets,
        upload_prefix=settings.upload_prefix,
    )
    client = s3_client(settings)
    s3_calls = ThreadPoolExecutor(S3_THREADS, thread_name_prefix="s3")

    def read_uri(uri: str, max_bytes: int) -> bytes:
        return read_object(client, uri, max_bytes)

    def stored_in_s3(original: Original) -> StoredOriginal | None:
        try:
            with s3_dependency():  # an outage, not a verdict on the record: waited out, the batch redone
                metadata = client.head_object(Bucket=original.bucket, Key=original.key)["Metadata"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                return None
            raise
        return StoredOriginal(metadata.get(SHA256, ""), metadata.get(SOURCE, ""))

    def store(original: Original) -> None:
        with s3_dependency():
            client.put_object(
                Bucket=original.bucket,
                Key=original.key,
                Body=original.data,
                ContentType=original.content_type,
                Metadata={SHA256: original.sha256, SOURCE: original.source},
            )

    def store_new(checked: list[tuple[IngestedPhoto, Original]]) -> list[IngestedPhoto | RecordError]:
        originals = [original for _, original in checked]
        outcomes = new_originals(originals, list(s3_calls.map(stored_in_s3, originals)))
        # An S3 failure raises here: the batch is not committed; the stage loop redoes it.
        list(s3_calls.map(store, [outcome for outcome in outcomes if isinstance(outcome, Original)]))
        return [
            outcome if isinstance(outcome, RecordError) else record
            for (record, _), outcome in zip(checked, outcomes, strict=True)
        ]

    def transform(batch: list[Received[PhotoEvent]]) -> list[IngestedPhoto | RecordError]:
        return map_valid(
            batch, lambda r: ingest_photo(r.record, r.timestamp, r.source, policy, read_uri), store_new
        )

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

"""Run the ingest service: ``python -m services.ingest`` (settings: FRUITS_* variables)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from botocore.exceptions import ClientError

from core.errors import DependencyError, RecordError, map_valid
from core.kafka import Backoff, Received, Stage, run_stage
from core.records import IngestedPhoto, PhotoEvent
from core.s3 import read_object, s3_client, s3_dependency
from core.settings import Settings, get_settings
from services.ingest.transform import (
    IngestPolicy,
    Original,
    StoredOriginal,
    check_not_stored,
    ingest_photo,
    new_originals,
)

S3_THREADS = 8
"""A batch's originals are looked up and stored concurrently: S3 latency, not CPU, bounds ingest."""
SHA256, SOURCE = "sha256", "source"
"""Object metadata of a stored original (x-amz-meta-…): see services.ingest.transform."""
KEY_TAKEN = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")
"""A conditional put refused because the key holds an object (409: a concurrent write to it)."""
PROBE_KEY = "originals/.conditional-write-probe"
"""Written at start-up to check that the store honours If-None-Match (no user id starts with a dot)."""

log = logging.getLogger("services.ingest")


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

    def put(original: Original, if_absent: bool) -> bool:
        """Store the original; with ``if_absent``, only if its key holds nothing (False if it does)."""
        condition = {"IfNoneMatch": "*"} if if_absent else {}
        try:
            with s3_dependency():
                client.put_object(
                    Bucket=original.bucket,
                    Key=original.key,
                    Body=original.data,
                    ContentType=original.content_type,
                    Metadata={SHA256: original.sha256, SOURCE: original.source},
                    **condition,
                )
        except ClientError as exc:
            if if_absent and exc.response.get("Error", {}).get("Code") in KEY_TAKEN:
                return False
            raise
        return True

    def store(original: Original) -> RecordError | None:
        """One conditional request for a new original (the common case); only when its key is
        taken is the stored object's metadata read, to tell our own retry (stored again) from a
        replayed event or a reused photo id (the error)."""
        if put(original, if_absent=True):
            return None
        try:
            check_not_stored(original, stored_in_s3(original))
        except RecordError as error:
            return error
        put(original, if_absent=False)
        return None

    def store_new(checked: list[tuple[IngestedPhoto, Original]]) -> list[IngestedPhoto | RecordError]:
        # A repeat within the batch is refused before S3 sees it; the rest are stored concurrently.
        # An S3 failure raises here: the batch is not committed; the stage loop redoes it.
        outcomes = new_originals([original for _, original in checked])
        refusals = iter(list(s3_calls.map(store, [o for o in outcomes if isinstance(o, Original)])))
        return [
            outcome if isinstance(outcome, RecordError) else next(refusals) or record
            for (record, _), outcome in zip(checked, outcomes, strict=True)
        ]

    def check_conditional_writes(stop: Callable[[], bool]) -> None:
        """Refuse to start on a store that ignores If-None-Match: it would let a reused photo id
        overwrite the original silently. S3 away at start-up is waited out."""
        bucket = next(iter(policy.region_buckets.values()))
        probe = Original(bucket, PROBE_KEY, b"", "application/octet-stream", "", "start-up probe")
        backoff = Backoff(settings.retry_backoff_initial_seconds, settings.retry_backoff_max_seconds)
        while not stop():
            try:
                put(probe, if_absent=False)
                overwritten = put(probe, if_absent=True)
            except DependencyError as exc:
                delay = backoff.next_delay()
                log.warning("ingest: %s; checking the S3 store again in %.0f s", exc, delay)
                resume_at = time.monotonic() + delay
                while not stop() and time.monotonic() < resume_at:  # SIGTERM is not kept waiting
                    time.sleep(0.2)
                continue
            if overwritten:
                raise RuntimeError(
                    f"the S3 store at {settings.s3_endpoint_url} ignores conditional writes (If-None-Match: *): "
                    "ingest needs them so that a reused photo id never overwrites a stored original "
                    "(AWS S3, MinIO and SeaweedFS ≥ 3.97 have them)"
                )
            return

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
        on_start=check_conditional_writes,
    )


if __name__ == "__main__":
    settings = get_settings().acting_as("ingest")
    run_stage(build_stage(settings), settings)

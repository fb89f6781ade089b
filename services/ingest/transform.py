"""Pure ingest logic: checks a photo event and decides where its original is stored."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from core.errors import Reason, RecordError
from core.imaging import inspect_image
from core.metadata import strip_location
from core.records import IngestedPhoto, PhotoEvent, PhotoRef

PHOTO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
EXTENSIONS = {
    "image/jpeg": "jpg", "image/png": "png", "image/webp": "webp",
    "image/heic": "heic", "image/heif": "heif", "image/avif": "avif",
}


@dataclass(frozen=True)
class IngestPolicy:
    max_image_bytes: int
    max_inline_image_bytes: int
    max_image_pixels: int
    region_buckets: dict[str, str]


@dataclass(frozen=True)
class Original:
    """An original to store before the IngestedPhoto record is published."""

    bucket: str
    key: str
    data: bytes
    content_type: str


def original_key(photo_id: str, captured_at: datetime, content_type: str) -> str:
    """Deterministic: a replayed event overwrites its own object instead of adding one."""
    return f"originals/{captured_at:%Y/%m/%d}/{photo_id}.{EXTENSIONS[content_type]}"


def ingest_photo(
    event: PhotoEvent,
    received_at: datetime,
    policy: IngestPolicy,
    read_uri: Callable[[str, int], bytes],
) -> tuple[IngestedPhoto, Original]:
    """Validate ``event``; return the IngestedPhoto record and the original, without location
    metadata (``core.metadata.strip_location``: HEIC/HEIF/AVIF become JPEG), to store in the
    bucket of the photo's region. ``read_uri(uri, max_bytes)`` fetches
    images sent by reference."""
    if not PHOTO_ID.fullmatch(event.photo_id):
        raise RecordError(Reason.BAD_PHOTO_ID, f"photo_id {event.photo_id[:80]!r} must match {PHOTO_ID.pattern}")
    bucket = policy.region_buckets.get(event.region)
    if bucket is None:
        raise RecordError(
            Reason.UNKNOWN_REGION,
            f"region {event.region[:40]!r} has no bucket (known: {', '.join(sorted(policy.region_buckets))})",
        )
    if (event.image is None) == (event.image_uri is None):
        raise RecordError(Reason.BAD_EVENT, "exactly one of image and image_uri must be set")
    data = event.image if event.image is not None else read_uri(event.image_uri, policy.max_image_bytes)
    if len(data) > policy.max_image_bytes:
        raise RecordError(
            Reason.IMAGE_TOO_LARGE, f"{len(data):,} bytes exceeds the limit of {policy.max_image_bytes:,}"
        )
    info = inspect_image(data, policy.max_image_pixels)
    stored = strip_location(data, info.content_type)
    if len(stored.data) > policy.max_image_bytes:  # a re-encoded HEIC/AVIF may outgrow the original
        raise RecordError(
            Reason.IMAGE_TOO_LARGE, f"{len(stored.data):,} bytes as JPEG exceeds the limit of {policy.max_image_bytes:,}"
        )
    original = Original(
        bucket,
        original_key(event.photo_id, event.captured_at, stored.content_type),
        stored.data,
        stored.content_type,
    )
    record = IngestedPhoto(
        photo=PhotoRef(
            photo_id=event.photo_id,
            user_id=event.user_id,
            captured_at=event.captured_at,
            received_at=received_at,
            region=event.region,
            original_uri=f"s3://{bucket}/{original.key}",
        ),
        content_type=stored.content_type,
        width=info.width,
        height=info.height,
        sha256=hashlib.sha256(original.data).hexdigest(),
        image=original.data if len(original.data) <= policy.max_inline_image_bytes else None,
    )
    return record, original

"""Pure ingest logic: checks a photo event and decides where its original is stored.

Identity: photo ids are chosen by clients, so they are scoped per user: a user's original is
stored at ``originals/<user_id>/<photo_id>`` of the region's bucket, and an id another user
already took names a different object. The stored original carries, as object metadata, the
sha256 of its bytes and the Kafka position of the event that stored it, which tells a replay
(``duplicate_event``), a second image under a taken id (``duplicate_photo_id``) and our own
retry of the same event after a crash (stored again, identically) apart.
"""

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
from core.s3 import parse_s3_uri

IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""photo_id and user_id: safe as one S3 key segment, at most 128 characters."""
MAX_FIELD_CHARS = {"region": 32, "content_type": 100, "image_uri": 1024}
"""Longest accepted value of the other string fields (documented in PhotoEvent.avsc)."""
UNSAFE_KEY_SEGMENTS = re.compile(r"(^|/)\.{1,2}(/|$)|//|\\")
"""Key segments some stores normalise (``..``, ``.``, empty, backslash): refused in image_uri."""


@dataclass(frozen=True)
class IngestPolicy:
    max_image_bytes: int
    max_inline_image_bytes: int
    max_image_pixels: int
    region_buckets: dict[str, str]
    upload_prefix: str = "uploads/{user_id}/"
    """Where a user's large photos are uploaded: the only keys image_uri may name."""


@dataclass(frozen=True)
class Original:
    """An original to store before the IngestedPhoto record is published."""

    bucket: str
    key: str
    data: bytes
    content_type: str
    sha256: str
    source: str
    """The Kafka position of the event storing it (``Received.source``)."""


@dataclass(frozen=True)
class StoredOriginal:
    """What the object metadata of an already stored original says."""

    sha256: str
    source: str


def original_key(user_id: str, photo_id: str) -> str:
    """One object per user and photo id: a retried event overwrites its own object."""
    return f"originals/{user_id}/{photo_id}"


def check_fields(event: PhotoEvent, policy: IngestPolicy) -> str:
    """Check the event's strings before anything uses them; the region's bucket."""
    for name, limit in MAX_FIELD_CHARS.items():
        value = getattr(event, name)
        if value is not None and len(value) > limit:
            raise RecordError(Reason.FIELD_TOO_LONG, f"{name} is {len(value):,} characters, over the limit of {limit}")
    if not IDENTIFIER.fullmatch(event.photo_id):
        raise RecordError(Reason.BAD_PHOTO_ID, f"photo_id {event.photo_id[:80]!r} must match {IDENTIFIER.pattern}")
    if not IDENTIFIER.fullmatch(event.user_id):
        raise RecordError(Reason.BAD_USER_ID, f"user_id {event.user_id[:80]!r} must match {IDENTIFIER.pattern}")
    bucket = policy.region_buckets.get(event.region)
    if bucket is None:
        raise RecordError(
            Reason.UNKNOWN_REGION,
            f"region {event.region!r} has no bucket (known: {', '.join(sorted(policy.region_buckets))})",
        )
    if (event.image is None) == (event.image_uri is None):
        raise RecordError(Reason.BAD_EVENT, "exactly one of image and image_uri must be set")
    return bucket


def check_image_uri(uri: str, user_id: str, bucket: str, policy: IngestPolicy) -> None:
    """Refuse, without reading it, any object outside the user's own uploads in the event's
    region bucket: ingest's S3 rights must not read for a sender what the sender may not."""
    uri_bucket, key = parse_s3_uri(uri)
    prefix = policy.upload_prefix.format(user_id=user_id)
    if uri_bucket != bucket or not key.startswith(prefix) or UNSAFE_KEY_SEGMENTS.search(key):
        raise RecordError(
            Reason.FORBIDDEN_IMAGE_URI, f"image_uri must name an object under s3://{bucket}/{prefix} (got {uri[:200]!r})"
        )


def check_not_stored(original: Original, stored: StoredOriginal | None) -> None:
    if stored is None or stored.source == original.source:  # new, or our own retry after a crash
        return
    where = f"s3://{original.bucket}/{original.key}"
    if stored.sha256 == original.sha256:
        raise RecordError(Reason.DUPLICATE_EVENT, f"this photo was already ingested as {where} (from {stored.source})")
    raise RecordError(
        Reason.DUPLICATE_PHOTO_ID, f"photo id already used by this user for another image ({where}, from {stored.source})"
    )


def new_originals(originals: list[Original]) -> list[Original | RecordError]:
    """Each original of a batch, or why it must not be stored: one repeating an earlier one of
    the batch (same user and photo id) is judged by ``check_not_stored`` against that one.
    What S3 holds already is judged when storing (``check_not_stored`` again)."""
    claimed: dict[tuple[str, str], StoredOriginal] = {}
    outcomes: list[Original | RecordError] = []
    for original in originals:
        try:
            check_not_stored(original, claimed.get((original.bucket, original.key)))
        except RecordError as error:
            outcomes.append(error)
            continue
        claimed[original.bucket, original.key] = StoredOriginal(original.sha256, original.source)
        outcomes.append(original)
    return outcomes


def ingest_photo(
    event: PhotoEvent,
    received_at: datetime,
    source: str,
    policy: IngestPolicy,
    read_uri: Callable[[str, int], bytes],
) -> tuple[IngestedPhoto, Original]:
    """Validate the event read at ``source``; return the IngestedPhoto record and the original,
    without location metadata (``core.metadata.strip_location``: HEIC/HEIF/AVIF become JPEG), to
    store in the bucket of the photo's region unless ``check_not_stored`` refuses it.
    ``read_uri(uri, max_bytes)`` fetches images sent by reference."""
    bucket = check_fields(event, policy)
    if event.image_uri is not None:
        check_image_uri(event.image_uri, event.user_id, bucket, policy)
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
    key = original_key(event.user_id, event.photo_id)
    original = Original(bucket, key, stored.data, stored.content_type, hashlib.sha256(stored.data).hexdigest(), source)
    record = IngestedPhoto(
        photo=PhotoRef(
            photo_id=event.photo_id,
            user_id=event.user_id,
            captured_at=event.captured_at,
            received_at=received_at,
            region=event.region,
            original_uri=f"s3://{bucket}/{key}",
        ),
        content_type=stored.content_type,
        width=info.width,
        height=info.height,
        sha256=original.sha256,
        image=stored.data if len(stored.data) <= policy.max_inline_image_bytes else None,
    )
    return record, original

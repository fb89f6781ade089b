"""Sending a photo as a PhotoEvent, the part every producer of photo events shares (`fruits
produce`, the HTTP gateway): a new photo id, the photo without its location metadata, and
the event itself, inline or, over the inline limit, uploaded to the user's prefix of the
region's bucket and sent as an s3:// reference (the only keys ingest accepts)."""

from __future__ import annotations

import mimetypes
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from core.errors import RecordError
from core.imaging import sniff_content_type
from core.metadata import strip_location
from core.records import PhotoEvent
from core.settings import Settings


def new_photo_id() -> str:
    return uuid.uuid4().hex


class LocationNotRemovable(ValueError):
    """A photo of a supported type whose location metadata cannot be removed (a corrupt file): not sent."""


def without_location(data: bytes) -> tuple[bytes, str | None]:
    """The photo and its content type as ingest will store it: without location metadata
    (``core.metadata.strip_location``; HEIC/HEIF/AVIF become JPEG), so that our own events
    never carry a location on the photos topic. Bytes that are not a photo of a supported type
    are returned unchanged (type None): there is nothing we know how to strip, and ingest
    rejects them. A supported photo whose location cannot be removed raises LocationNotRemovable."""
    try:
        content_type = sniff_content_type(data)
    except RecordError:
        return data, None
    try:
        stripped = strip_location(data, content_type)
    except RecordError as exc:
        raise LocationNotRemovable(f"not sent: cannot remove the location metadata of this {content_type} ({exc})") from exc
    return stripped.data, stripped.content_type


def upload_key(settings: Settings, user_id: str, photo_id: str, suffix: str = "") -> str:
    """Where a large photo of ``user_id`` is uploaded in its region's bucket."""
    return f"{settings.upload_prefix.format(user_id=user_id)}{photo_id}{suffix}"


def photo_event(
    settings: Settings,
    s3: Any,
    photo_id: str,
    user_id: str,
    region: str,
    data: bytes,
    content_type: str | None,
    name: str = "",
) -> PhotoEvent:
    """The event of a photo already without its location (``without_location``); a photo over
    FRUITS_MAX_INLINE_IMAGE_BYTES is first uploaded with ``s3`` (a boto3 client; only then used)."""
    content_type = content_type or (mimetypes.guess_type(name)[0] if name else None)
    inline = len(data) <= settings.max_inline_image_bytes
    image_uri = None
    if not inline:
        suffix = (mimetypes.guess_extension(content_type) if content_type else None) or Path(name).suffix
        bucket, key = settings.region_buckets[region], upload_key(settings, user_id, photo_id, suffix)
        s3.put_object(Bucket=bucket, Key=key, Body=data)
        image_uri = f"s3://{bucket}/{key}"
    return PhotoEvent(
        photo_id=photo_id,
        user_id=user_id,
        captured_at=datetime.now(timezone.utc),
        region=region,
        content_type=content_type,
        image=data if inline else None,
        image_uri=image_uri,
    )

"""Size limits, defined once: every other limit derives from ``max_record_bytes``.

- a data topic takes records up to ``record_bytes`` (``max.message.bytes``);
- a dead letter carries a rejected record whole (key and value) plus the reason, so the
  dead-letter topic, every producer (stages produce dead letters) and the broker take
  ``dead_letter_bytes`` = 2 × ``record_bytes``;
- a photo travels inline only if its PhotoEvent and IngestedPhoto still fit a record.

``check_size_limits`` proves both by encoding the largest such records, and a service
refuses to start if they do not fit (a wrong setting fails loudly, not record by record).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from core.settings import Settings

DEAD_LETTER_MESSAGE_CHARS = 2000
"""A dead letter's error message is cut to this many characters (it must never be what does not fit)."""
RECORD_FIELDS_ALLOWANCE = 16 * 1024
"""Room left in a record beside an inline image, for its other fields (ids, URIs, hashes)."""


@dataclass(frozen=True)
class SizeLimits:
    record_bytes: int
    """Largest record on a data topic."""
    dead_letter_bytes: int
    """Largest dead letter: also the producers' ``message.max.bytes`` and the broker's."""
    inline_image_bytes: int
    """Largest photo carried inline in a record."""


def size_limits(settings: Settings) -> SizeLimits:
    return SizeLimits(
        record_bytes=settings.max_record_bytes,
        dead_letter_bytes=2 * settings.max_record_bytes,
        inline_image_bytes=settings.max_inline_image_bytes,
    )


def check_size_limits(settings: Settings) -> SizeLimits:
    """The limits, after proving that the largest dead letter and the largest inline photo
    fit; raises ValueError naming the settings to change otherwise."""
    from core.records import DeadLetter, encode_record  # records need the schemas; keep this module light

    limits = size_limits(settings)
    if limits.inline_image_bytes + RECORD_FIELDS_ALLOWANCE > limits.record_bytes:
        raise ValueError(
            f"FRUITS_MAX_INLINE_IMAGE_BYTES={limits.inline_image_bytes:,} leaves less than "
            f"{RECORD_FIELDS_ALLOWANCE:,} bytes for the other fields of a {limits.record_bytes:,}-byte record "
            "(FRUITS_MAX_RECORD_BYTES): lower the one or raise the other"
        )
    largest = DeadLetter(
        source_topic="t" * 249,  # Kafka's longest topic name
        source_partition=2**31 - 1,
        source_offset=2**63 - 1,
        stage="s" * 64,
        error_class="r" * 64,
        error_message="m" * DEAD_LETTER_MESSAGE_CHARS,
        photo_id="p" * 128,
        failed_at=datetime.now(timezone.utc),
        original_key=b"",
        original_value=bytes(limits.record_bytes),  # key and value share the record's limit
    )
    size = len(encode_record(largest))
    if size > limits.dead_letter_bytes:
        raise ValueError(
            f"a dead letter of the largest record takes {size:,} bytes, over the dead-letter limit of "
            f"{limits.dead_letter_bytes:,} (2 × FRUITS_MAX_RECORD_BYTES)"
        )
    return limits

from datetime import datetime, timezone

import pytest

from core.errors import RecordError
from core.records import PhotoEvent
from services.ingest.transform import IngestPolicy, ingest_photo
from tests import images

POLICY = IngestPolicy(
    max_image_bytes=2_000_000, max_inline_image_bytes=5_000, max_image_pixels=40_000_000,
    region_buckets={"eu": "photos-eu", "us": "photos-us"},
)
CAPTURED = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
RECEIVED = datetime(2026, 3, 4, 5, 6, 8, tzinfo=timezone.utc)


def event(**changes):
    fields = {"photo_id": "p-1", "user_id": "u", "captured_at": CAPTURED, "region": "eu",
              "content_type": None, "image": images.jpeg(gps=True), "image_uri": None, **changes}
    return PhotoEvent(**fields)


def no_uri(uri, max_bytes):
    raise AssertionError("must not read a URI")


def test_valid_photo_is_stored_in_its_region_without_gps():
    record, original = ingest_photo(event(region="us"), RECEIVED, POLICY, no_uri)
    assert (original.bucket, original.key) == ("photos-us", "originals/2026/03/04/p-1.jpg")
    assert record.photo.original_uri == "s3://photos-us/originals/2026/03/04/p-1.jpg"
    assert record.photo.received_at == RECEIVED and record.content_type == "image/jpeg"
    assert (record.photo.photo_id, record.photo.user_id, record.photo.region) == ("p-1", "u", "us")
    assert (record.width, record.height) == (100, 100)
    assert record.image == original.data and b"FruitsTestCam" in original.data
    from PIL import Image
    import io
    assert images.GPS_IFD not in Image.open(io.BytesIO(original.data)).getexif()


def test_large_photo_travels_by_reference():
    big = images.jpeg(400, 400)
    seen = []

    def read_uri(uri, max_bytes):
        seen.append((uri, max_bytes))
        return big

    record, _ = ingest_photo(event(image=None, image_uri="s3://photos-eu/uploads/p-1.jpg"), RECEIVED,
                             IngestPolicy(2_000_000, 100, 40_000_000, {"eu": "photos-eu"}), read_uri)
    assert seen == [("s3://photos-eu/uploads/p-1.jpg", 2_000_000)]
    assert record.image is None  # over the inline limit: preprocess reads original_uri


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"region": "mars"}, "unknown_region"),
        ({"photo_id": "../../etc/passwd"}, "bad_photo_id"),
        ({"image": None}, "bad_event"),
        ({"image_uri": "s3://x/y"}, "bad_event"),
        ({"image": images.PDF}, "unsupported_type"),
        ({"image": b""}, "empty_image"),
        ({"image": images.truncated_jpeg()}, "undecodable_image"),
        ({"image": images.huge_png()}, "image_too_large"),
        ({"image": b"\xff\xd8\xff" + b"\x00" * 2_000_000}, "image_too_large"),
    ],
)
def test_bad_events_are_rejected_with_a_reason(changes, reason):
    with pytest.raises(RecordError) as caught:
        ingest_photo(event(**changes), RECEIVED, POLICY, no_uri)
    assert caught.value.reason == reason


def test_phone_formats_are_stored_as_plain_jpegs_without_location():
    import io

    from PIL import Image

    for data, size in [(images.located_heic(), (64, 64)), (images.located_avif(), (64, 32)),
                       (images.located_mpo(), (64, 48)), (images.located_jpeg(), (64, 48))]:
        record, original = ingest_photo(event(image=data), RECEIVED, POLICY, no_uri)
        assert original.key == "originals/2026/03/04/p-1.jpg" and original.content_type == "image/jpeg"
        assert record.content_type == "image/jpeg" and (record.width, record.height) == size
        stored = Image.open(io.BytesIO(original.data))
        assert (stored.format, getattr(stored, "n_frames", 1), stored.size) == ("JPEG", 1, size)
        assert [m for m in images.LOCATION_MARKERS + images.HEIC_MARKERS if m in original.data] == []
        assert images.GPS_IFD not in stored.getexif()


def test_a_reencoded_photo_over_the_byte_limit_is_refused():
    import io

    out = io.BytesIO()
    images.noise(64, 64).save(out, format="AVIF", quality=20)  # noise: a small AVIF, a big JPEG at quality 95
    avif = out.getvalue()
    tight = IngestPolicy(2 * len(avif), 5_000, 40_000_000, {"eu": "photos-eu"})
    with pytest.raises(RecordError) as caught:
        ingest_photo(event(image=avif), RECEIVED, tight, no_uri)
    assert caught.value.reason == "image_too_large" and "as JPEG" in str(caught.value)
    roomy = IngestPolicy(100 * len(avif), 5_000, 40_000_000, {"eu": "photos-eu"})
    assert ingest_photo(event(image=avif), RECEIVED, roomy, no_uri)[1].content_type == "image/jpeg"

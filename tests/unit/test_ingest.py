import io
from datetime import datetime, timezone

import pytest
from PIL import Image

from core.errors import RecordError
from core.records import PhotoEvent
from services.ingest.transform import IngestPolicy, StoredOriginal, check_not_stored, ingest_photo, new_originals
from tests import images

POLICY = IngestPolicy(
    max_image_bytes=2_000_000, max_inline_image_bytes=5_000, max_image_pixels=40_000_000,
    region_buckets={"eu": "photos-eu", "us": "photos-us"},
)
CAPTURED = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
RECEIVED = datetime(2026, 3, 4, 5, 6, 8, tzinfo=timezone.utc)
SOURCE = "fruits.photos[0]@7"


def event(**changes):
    fields = {"photo_id": "p-1", "user_id": "u", "captured_at": CAPTURED, "region": "eu",
              "content_type": None, "image": images.jpeg(gps=True), "image_uri": None, **changes}
    return PhotoEvent(**fields)


def no_uri(uri, max_bytes):
    raise AssertionError("must not read a URI")


def ingest(ev, policy=POLICY, read_uri=no_uri, source=SOURCE):
    return ingest_photo(ev, RECEIVED, source, policy, read_uri)


def test_valid_photo_is_stored_under_its_user_in_its_region_without_gps():
    record, original = ingest(event(region="us"))
    assert (original.bucket, original.key) == ("photos-us", "originals/u/p-1")
    assert record.photo.original_uri == "s3://photos-us/originals/u/p-1"
    assert record.photo.received_at == RECEIVED and record.content_type == "image/jpeg"
    assert (record.photo.photo_id, record.photo.user_id, record.photo.region) == ("p-1", "u", "us")
    assert (record.width, record.height) == (100, 100)
    assert record.image == original.data and b"FruitsTestCam" in original.data
    assert record.sha256 == original.sha256 and original.source == SOURCE
    assert images.GPS_IFD not in Image.open(io.BytesIO(original.data)).getexif()


def test_two_users_with_the_same_photo_id_get_different_objects():
    _, first = ingest(event(user_id="alice"))
    _, second = ingest(event(user_id="bob"))
    assert first.key != second.key


def test_large_photo_travels_by_reference_from_the_users_uploads():
    big = images.jpeg(400, 400)
    seen = []

    def read_uri(uri, max_bytes):
        seen.append((uri, max_bytes))
        return big

    record, _ = ingest(event(image=None, image_uri="s3://photos-eu/uploads/u/p-1.jpg"),
                       IngestPolicy(2_000_000, 100, 40_000_000, {"eu": "photos-eu"}), read_uri)
    assert seen == [("s3://photos-eu/uploads/u/p-1.jpg", 2_000_000)]
    assert record.image is None  # over the inline limit: preprocess reads original_uri


@pytest.mark.parametrize(
    "uri",
    [
        "s3://photos-us/uploads/u/p-1.jpg",  # another region's bucket
        "s3://fruits-models/current.json",  # a private bucket
        "s3://photos-eu/uploads/alice/p-1.jpg",  # another user's upload
        "s3://photos-eu/originals/u/p-1",  # not an upload
        "s3://photos-eu/uploads/u/../alice/p-1.jpg",  # a path some stores normalise
        "s3://photos-eu/uploads/u//p-1.jpg",
        "s3://photos-eu/uploads/u",
    ],
)
def test_an_image_uri_outside_the_users_uploads_is_forbidden_without_reading_it(uri):
    with pytest.raises(RecordError) as caught:
        ingest(event(image=None, image_uri=uri))
    assert caught.value.reason == "forbidden_image_uri"


def test_the_uploads_prefix_is_configurable():
    policy = IngestPolicy(2_000_000, 5_000, 40_000_000, {"eu": "photos-eu"}, upload_prefix="in/{user_id}/photos/")
    record, _ = ingest(event(image=None, image_uri="s3://photos-eu/in/u/photos/a.jpg"), policy,
                       lambda uri, max_bytes: images.jpeg())
    assert record.photo.photo_id == "p-1"
    with pytest.raises(RecordError) as caught:
        ingest(event(image=None, image_uri="s3://photos-eu/uploads/u/a.jpg"), policy)
    assert caught.value.reason == "forbidden_image_uri"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"region": "mars"}, "unknown_region"),
        ({"photo_id": "../../etc/passwd"}, "bad_photo_id"),
        ({"photo_id": "p" * 129}, "bad_photo_id"),
        ({"user_id": "x" * 1_000_000}, "bad_user_id"),
        ({"user_id": "alice/../bob"}, "bad_user_id"),
        ({"user_id": ""}, "bad_user_id"),
        ({"region": "e" * 33}, "field_too_long"),
        ({"content_type": "image/" + "x" * 100}, "field_too_long"),
        ({"image": None, "image_uri": "s3://photos-eu/uploads/u/" + "k" * 1024}, "field_too_long"),
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
        ingest(event(**changes))
    assert caught.value.reason == reason
    assert len(str(caught.value)) < 1_000  # a huge field is not echoed back whole


def test_a_replayed_event_is_a_duplicate_event():
    _, original = ingest(event(), source="fruits.photos[0]@99")
    with pytest.raises(RecordError) as refused:
        check_not_stored(original, StoredOriginal(original.sha256, SOURCE))
    assert refused.value.reason == "duplicate_event"


def test_another_image_under_a_used_photo_id_is_a_duplicate_photo_id():
    _, original = ingest(event(image=images.jpeg(50, 50)), source="fruits.photos[0]@99")
    with pytest.raises(RecordError) as refused:
        check_not_stored(original, StoredOriginal("0" * 64, SOURCE))
    assert refused.value.reason == "duplicate_photo_id"


def test_our_own_retry_after_a_crash_stores_again():
    _, original = ingest(event())
    check_not_stored(original, StoredOriginal(original.sha256, SOURCE))  # stored by this event: no error
    check_not_stored(original, None)


def test_a_repeat_within_one_batch_counts_as_stored():
    _, first = ingest(event(), source="fruits.photos[0]@1")
    _, replay = ingest(event(), source="fruits.photos[0]@2")
    _, other_image = ingest(event(image=images.jpeg(50, 50)), source="fruits.photos[0]@3")
    _, other_user = ingest(event(user_id="bob"), source="fruits.photos[0]@4")
    outcomes = new_originals([first, replay, other_image, other_user])
    assert outcomes[0] == first and outcomes[3] == other_user
    assert [outcome.reason for outcome in outcomes[1:3]] == ["duplicate_event", "duplicate_photo_id"]


def test_phone_formats_are_stored_as_plain_jpegs_without_location():
    import io

    from PIL import Image

    for data, size in [(images.located_heic(), (64, 64)), (images.located_avif(), (64, 32)),
                       (images.located_mpo(), (64, 48)), (images.located_jpeg(), (64, 48))]:
        record, original = ingest(event(image=data))
        assert original.key == "originals/u/p-1" and original.content_type == "image/jpeg"
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
        ingest(event(image=avif), tight)
    assert caught.value.reason == "image_too_large" and "as JPEG" in str(caught.value)
    roomy = IngestPolicy(100 * len(avif), 5_000, 40_000_000, {"eu": "photos-eu"})
    assert ingest(event(image=avif), roomy)[1].content_type == "image/jpeg"


class FakeS3:
    """Conditional puts as S3 answers them: 412 when the key holds an object."""

    def __init__(self):
        self.objects: dict[tuple[str, str], dict] = {}
        self.calls: list[str] = []

    def put_object(self, Bucket, Key, Body, ContentType, Metadata, IfNoneMatch=None):
        from botocore.exceptions import ClientError

        self.calls.append("put_if_absent" if IfNoneMatch else "put")
        if IfNoneMatch == "*" and (Bucket, Key) in self.objects:
            raise ClientError({"Error": {"Code": "PreconditionFailed"}}, "PutObject")
        self.objects[Bucket, Key] = {"Body": Body, "Metadata": Metadata}

    def head_object(self, Bucket, Key):
        self.calls.append("head")
        return {"Metadata": self.objects[Bucket, Key]["Metadata"]}


def ingest_stage(monkeypatch):
    from core.kafka import Received
    from core.settings import Settings
    from services.ingest import __main__ as service

    s3 = FakeS3()
    monkeypatch.setattr(service, "s3_client", lambda settings: s3)
    stage = service.build_stage(Settings())

    def run(*events_at):
        return stage.transform([Received(e, RECEIVED, source) for e, source in events_at])

    return s3, run


def test_a_new_original_is_stored_with_one_conditional_request(monkeypatch):
    s3, run = ingest_stage(monkeypatch)
    (outcome,) = run((event(), SOURCE))
    assert not isinstance(outcome, RecordError)
    assert s3.calls == ["put_if_absent"]


def test_a_taken_key_is_read_once_to_tell_a_retry_from_a_duplicate(monkeypatch):
    s3, run = ingest_stage(monkeypatch)
    run((event(), SOURCE))
    s3.calls.clear()
    (retried,) = run((event(), SOURCE))  # the same event after a crash: stored again
    assert not isinstance(retried, RecordError)
    assert s3.calls == ["put_if_absent", "head", "put"]
    (replayed,) = run((event(), "fruits.photos[0]@8"))
    (reused,) = run((event(image=images.jpeg(50, 50)), "fruits.photos[0]@9"))
    assert (replayed.reason, reused.reason) == ("duplicate_event", "duplicate_photo_id")
    (stored,) = s3.objects.values()  # neither overwrote the first event's original
    assert stored["Metadata"]["source"] == SOURCE


def test_ingest_refuses_to_start_on_a_store_that_ignores_conditional_writes(monkeypatch):
    from core.settings import Settings
    from services.ingest import __main__ as service

    class IgnoresConditions(FakeS3):
        def put_object(self, IfNoneMatch=None, **request):
            super().put_object(**request)

    for s3, refused in ((FakeS3(), False), (IgnoresConditions(), True)):
        monkeypatch.setattr(service, "s3_client", lambda settings, s3=s3: s3)
        stage = service.build_stage(Settings())
        if refused:
            with pytest.raises(RuntimeError, match="ignores conditional writes"):
                stage.on_start(lambda: False)
        else:
            stage.on_start(lambda: False)


def test_ingest_waiting_for_s3_at_start_up_stops_when_told(monkeypatch):
    from botocore.exceptions import ClientError

    from core.settings import Settings
    from services.ingest import __main__ as service

    class Away(FakeS3):
        def put_object(self, **request):
            away = {"Error": {"Code": "ServiceUnavailable"}, "ResponseMetadata": {"HTTPStatusCode": 503}}
            raise ClientError(away, "PutObject")

    monkeypatch.setattr(service, "s3_client", lambda settings: Away())
    naps: list[float] = []
    monkeypatch.setattr(service.time, "sleep", naps.append)
    stage = service.build_stage(Settings(retry_backoff_initial_seconds=30))
    stage.on_start(lambda: len(naps) >= 1)  # SIGTERM during the first wait
    assert naps == [0.2]  # not the 30-s backoff

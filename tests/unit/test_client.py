"""`fruits produce` sends photos without location metadata (tools/client.py, core/photos.py)."""

import io

import pytest
from PIL import Image

from core.records import PhotoEvent, decode_record
from core.settings import Settings
from tests import images
from tests.unit.fakes import MemoryS3
from tools import client
from core.photos import without_location
from tools.client import PhotoSender

MARKERS = images.LOCATION_MARKERS + images.HEIC_MARKERS


class FakeProducer:
    def __init__(self, config):
        self.sent = []

    def produce(self, topic, key, value, on_delivery):
        self.sent.append((topic, key, value))

    def poll(self, timeout):
        return 0


@pytest.fixture
def sender(monkeypatch):
    monkeypatch.setattr(client, "Producer", FakeProducer)
    sender = PhotoSender(Settings(max_inline_image_bytes=3_000, kafka_security_protocol="PLAINTEXT"))
    sender._s3 = MemoryS3()
    return sender


def sent_event(sender) -> PhotoEvent:
    [(topic, _, value)] = sender.producer.sent
    assert topic == sender.settings.topic_photos
    return decode_record(PhotoEvent, value)


def test_photos_are_sent_inline_without_location(sender):
    sender.send_bytes(images.located_heic(), "p-1", "IMG_0001.HEIC")
    event = sent_event(sender)
    assert event.content_type == "image/jpeg" and event.image is not None
    assert [m for m in MARKERS if m in event.image] == []
    assert Image.open(io.BytesIO(event.image)).size == (64, 64)


def test_uploaded_photos_are_uploaded_without_location(sender):
    sender.send_bytes(images.located_jpeg(), "p-2", "IMG_0002.jpg")  # over the 3,000-byte inline limit
    event = sent_event(sender)
    assert event.image is None and event.image_uri.endswith("/uploads/cli-user/p-2.jpg")
    [uploaded] = sender._s3.objects.values()
    assert [m for m in MARKERS if m in uploaded] == [] and Image.open(io.BytesIO(uploaded)).size == (64, 48)


def test_payloads_that_are_not_photos_are_sent_as_they_are():
    assert without_location(images.PDF) == (images.PDF, None)
    assert without_location(b"") == (b"", None)


def test_a_photo_whose_location_cannot_be_removed_is_not_sent(sender):
    with pytest.raises(ValueError, match="not sent"):
        sender.send_bytes(images.located_heic()[:600], "p-3", "IMG_0003.HEIC")
    assert sender.producer.sent == []

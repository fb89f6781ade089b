import io
import json
from datetime import datetime, timezone

import fastavro
import pytest

from core.avro import DEAD_LETTER, PHOTO_EVENT, SCHEMA_DIR, avro_type
from core.errors import RecordError

EVENT = {
    "photo_id": "p1",
    "user_id": "u1",
    "captured_at": datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc),
    "region": "eu",
    "content_type": "image/jpeg",
    "image": b"\xff\xd8\xffjpeg",
    "image_uri": None,
}


def test_round_trip():
    photo = avro_type(PHOTO_EVENT)
    assert photo.decode(photo.encode(EVENT)) == EVENT


def test_wire_format_is_avro_single_object_encoding():
    """Marker C3 01, then the little-endian CRC-64-AVRO fingerprint, then the plain
    Avro body: decodable with nothing but the .avsc file."""
    data = avro_type(PHOTO_EVENT).encode(EVENT)
    schema = json.loads((SCHEMA_DIR / "PhotoEvent.avsc").read_text())
    canonical = fastavro.schema.to_parsing_canonical_form(schema)
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"))
    assert fastavro.schemaless_reader(io.BytesIO(data[10:]), fastavro.parse_schema(schema)) == EVENT


def test_known_fingerprint_vector():
    """The spec's Rabin fingerprint of the schema "int" (Java's SchemaNormalization
    gives 0x7275d51a3f395c8f, written little-endian)."""
    assert fastavro.schema.fingerprint('"int"', "CRC-64-AVRO") == "8f5c393f1ad57572"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty_record"),
        (b"{\"photo_id\": 1}", "not_avro_single_object"),
        (b"\xc3\x01" + b"\x00" * 8 + b"body", "foreign_schema"),
    ],
)
def test_rejects_what_it_cannot_read(data, reason):
    with pytest.raises(RecordError) as caught:
        avro_type(PHOTO_EVENT).decode(data)
    assert caught.value.reason == reason


def test_record_of_another_type_is_a_foreign_schema():
    letter = avro_type(DEAD_LETTER).encode(
        {
            "source_topic": "t", "source_partition": 0, "source_offset": 1, "stage": "ingest",
            "error_class": "x", "error_message": "y", "photo_id": None,
            "failed_at": datetime.now(timezone.utc), "original_key": None, "original_value": None,
        }
    )
    with pytest.raises(RecordError, match="expected PhotoEvent") as caught:
        avro_type(PHOTO_EVENT).decode(letter)
    assert caught.value.reason == "foreign_schema"


def test_truncated_and_padded_bodies_are_corrupt():
    data = avro_type(PHOTO_EVENT).encode(EVENT)
    for bad in (data[:-3], data + b"\x00\x01"):
        with pytest.raises(RecordError) as caught:
            avro_type(PHOTO_EVENT).decode(bad)
        assert caught.value.reason == "corrupt_avro"


def test_records_of_an_earlier_schema_version_are_resolved(tmp_path, monkeypatch):
    """A record written with a kept earlier version decodes through schema resolution."""
    import core.avro as avro

    earlier = json.loads((SCHEMA_DIR / "PhotoEvent.avsc").read_text())
    earlier["fields"] = [f for f in earlier["fields"] if f["name"] != "content_type"]
    history = tmp_path / "history"
    history.mkdir()
    (history / "PhotoEvent.v1.avsc").write_text(json.dumps(earlier))
    monkeypatch.setattr(avro, "HISTORY_DIR", history)
    avro.avro_type.cache_clear()
    try:
        old_schema = fastavro.parse_schema(earlier)
        body = io.BytesIO()
        fastavro.schemaless_writer(body, old_schema, {k: v for k, v in EVENT.items() if k != "content_type"})
        data = avro.single_object_header(old_schema) + body.getvalue()
        assert avro.avro_type(PHOTO_EVENT).decode(data) == {**EVENT, "content_type": None}
    finally:
        avro.avro_type.cache_clear()

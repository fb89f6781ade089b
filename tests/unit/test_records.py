"""Every typed record matches its .avsc: field names, types and defaults, nested records
included; and each survives an Avro round trip unchanged."""

import dataclasses
import types
import typing
from datetime import datetime, timezone

import pytest

from core.avro import SCHEMA_DIR, avro_type
from core.errors import RecordError
from core.records import (
    RECORD_TYPES, DeadLetter, FruitInfo, IngestedPhoto, ModelVersions, NutritionPer100g, PhotoRef, Prediction,
    ScoredLabel, decode_record, encode_record,
)  # fmt: skip

T0 = datetime(2026, 5, 6, 7, 8, 9, 123000, tzinfo=timezone.utc)
REF = PhotoRef("p1", "u1", T0, T0, "eu", "s3://fruits-photos-eu/originals/2026/05/06/p1.jpg")
PRIMITIVES = {str: "string", bytes: "bytes", bool: "boolean", float: ("float", "double"), int: ("int", "long")}


def avro_fields(cls) -> list[tuple[str, typing.Any, bool, typing.Any]]:
    """(name, type hint, has default, default) of the Avro fields ``cls`` writes; PhotoRef flattened."""
    hints = typing.get_type_hints(cls)
    out = []
    for field in dataclasses.fields(cls):
        if hints[field.name] is PhotoRef:
            out += avro_fields(PhotoRef)
        else:
            if field.default is not dataclasses.MISSING:
                out.append((field.name, hints[field.name], True, field.default))
            elif field.default_factory is not dataclasses.MISSING:
                out.append((field.name, hints[field.name], True, field.default_factory()))
            else:
                out.append((field.name, hints[field.name], False, None))
    return out


def check_type(hint, avro, where):
    if isinstance(avro, list):  # a union: only ["null", X] is used
        assert avro[0] == "null" and len(avro) == 2, where
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        assert typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1, f"{where}: not optional"
        check_type(args[0], avro[1], where)
    elif isinstance(avro, str) and avro[0].isupper():  # a named type defined earlier in the schema
        assert dataclasses.is_dataclass(hint) and hint.__name__ == avro, where
    elif isinstance(avro, dict) and avro.get("logicalType") == "timestamp-millis":
        assert hint is datetime, where
    elif isinstance(avro, dict) and avro["type"] == "array":
        assert typing.get_origin(hint) is list, where
        check_type(typing.get_args(hint)[0], avro["items"], where)
    elif isinstance(avro, dict) and avro["type"] == "record":
        assert dataclasses.is_dataclass(hint) and hint.__name__ == avro["name"].split(".")[-1], where
        check_fields(hint, avro)
    else:
        expected = PRIMITIVES[hint]
        assert avro in (expected if isinstance(expected, tuple) else (expected,)), f"{where}: {hint} vs {avro}"


def check_fields(cls, schema):
    ours = avro_fields(cls)
    assert sorted(name for name, *_ in ours) == sorted(f["name"] for f in schema["fields"]), cls.__name__
    by_name = {f["name"]: f for f in schema["fields"]}
    for name, hint, has_default, default in ours:
        field = by_name[name]
        check_type(hint, field["type"], f"{cls.__name__}.{name}")
        assert has_default == ("default" in field), f"{cls.__name__}.{name}: default differs"
        if has_default:
            assert default == field["default"], f"{cls.__name__}.{name}"


@pytest.mark.parametrize("record_type", RECORD_TYPES, ids=lambda t: t.__name__)
def test_record_type_matches_its_schema(record_type):
    import json

    schema = json.loads((SCHEMA_DIR / f"{record_type.SCHEMA}.avsc").read_text())
    check_fields(record_type, schema)


def test_every_schema_has_a_record_type():
    assert {t.SCHEMA for t in RECORD_TYPES} == {p.stem for p in SCHEMA_DIR.glob("*.avsc")}


def test_a_misnamed_field_fails_the_check():
    @dataclasses.dataclass(frozen=True)
    class Wrong:
        photo: PhotoRef
        content_typ: str  # typo

    with pytest.raises(AssertionError):
        check_fields(Wrong, avro_type("IngestedPhoto").schema)


def test_round_trips_with_nested_and_embedded_records():
    prediction = Prediction(
        photo=REF, predicted_at=T0, label="Banana 1", confidence=0.75,
        top5=[ScoredLabel("Banana 1", 0.75), ScoredLabel("Plum 1", 0.25)],
        model_versions=ModelVersions("m@1", "v1", "v1"),
        fruit_type="banana", type_confidence=0.75, top5_types=[ScoredLabel("banana", 0.75), ScoredLabel("plum", 0.25)],
        unsure=False,
        fruit=FruitInfo("Banana", NutritionPer100g(energy_kcal=89.0), "Keep at room temperature.", ["USDA"]),
    )
    wire = prediction.to_avro()
    assert wire["photo_id"] == "p1" and "photo" not in wire  # flat on the wire
    assert decode_record(Prediction, encode_record(prediction)) == prediction
    ingested = IngestedPhoto(REF, "image/jpeg", 10, 20, "ab" * 32, image=None)
    assert decode_record(IngestedPhoto, encode_record(ingested)) == ingested


def test_decoding_the_wrong_type_is_a_record_error():
    letter = DeadLetter("t", 0, 1, "ingest", "bad_event", "msg", T0)
    with pytest.raises(RecordError):
        decode_record(IngestedPhoto, encode_record(letter))


def test_a_v1_prediction_reads_with_the_current_type():
    """Predictions written before fruit types (schemas/history/Prediction.v1.avsc) still decode."""
    import io

    from fastavro import schemaless_writer

    from core.avro import HISTORY_DIR, load_schema_file, single_object_header

    v1 = load_schema_file(HISTORY_DIR / "Prediction.v1.avsc")
    old = {"photo_id": "p1", "user_id": "u1", "captured_at": T0, "received_at": T0, "predicted_at": T0,
           "region": "eu", "original_uri": "s3://b/k", "label": "Kiwi 1", "confidence": 0.5,
           "top5": [{"label": "Kiwi 1", "confidence": 0.5}],
           "model_versions": {"featurizer_id": "f", "pca_version": "v", "classifier_version": "v"}, "fruit": None}
    out = io.BytesIO()
    out.write(single_object_header(v1))
    schemaless_writer(out, v1, old)
    prediction = decode_record(Prediction, out.getvalue())
    assert prediction.label == "Kiwi 1" and prediction.fruit_type is None
    assert prediction.top5_types == [] and prediction.unsure is False

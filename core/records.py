"""Typed records: one frozen dataclass per Avro record of ``schemas/``, with the code that
turns it into the dict fastavro writes and back (``tests/unit/test_records.py`` checks
every class against its ``.avsc``: names, types, defaults).

The fields that follow a photo through the pipeline (id, user, region, times, where
its original is stored) live in one ``PhotoRef``, embedded in every record after
ingest. On the wire and in the lake they stay flat, top-level fields, as the schemas
say: embedding is a code convenience, not a format change.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime
from functools import cache
from typing import Any, ClassVar, TypeVar

from core.avro import AvroType, avro_type

R = TypeVar("R", bound="Record")


@dataclass(frozen=True)
class PhotoRef:
    """Which photo a record is about: the fields shared by every record after ingest."""

    photo_id: str
    user_id: str
    captured_at: datetime
    received_at: datetime
    """When ingest took the photo event (its Kafka timestamp)."""
    region: str
    original_uri: str
    """Where the GPS-free original is stored (``s3://<region bucket>/originals/…``)."""


class Record:
    """Base of the top-level record types; ``SCHEMA`` names the ``.avsc`` file."""

    SCHEMA: ClassVar[str]

    def to_avro(self) -> dict[str, Any]:
        return _to_avro(self)

    @classmethod
    def from_avro(cls: type[R], data: dict[str, Any]) -> R:
        return _decoder(cls)(data)

    @classmethod
    def avro_type(cls) -> AvroType:
        return avro_type(cls.SCHEMA)


@dataclass(frozen=True)
class PhotoEvent(Record):
    SCHEMA = "PhotoEvent"

    photo_id: str
    user_id: str
    captured_at: datetime
    region: str
    content_type: str | None = None
    image: bytes | None = None
    image_uri: str | None = None


@dataclass(frozen=True)
class IngestedPhoto(Record):
    SCHEMA = "IngestedPhoto"

    photo: PhotoRef
    content_type: str
    width: int
    height: int
    sha256: str
    image: bytes | None = None
    """The GPS-free photo inline, if small enough; else read from ``photo.original_uri``."""


@dataclass(frozen=True)
class PreprocessedPhoto(Record):
    SCHEMA = "PreprocessedPhoto"

    photo: PhotoRef
    tensor: bytes
    shape: list[int]


@dataclass(frozen=True)
class PhotoFeatures(Record):
    SCHEMA = "PhotoFeatures"

    photo: PhotoRef
    featurizer_id: str
    features: list[float]


@dataclass(frozen=True)
class ReducedFeatures(Record):
    SCHEMA = "ReducedFeatures"

    photo: PhotoRef
    featurizer_id: str
    pca_version: str
    features: list[float]


@dataclass(frozen=True)
class ScoredLabel:
    label: str
    confidence: float


@dataclass(frozen=True)
class ModelVersions:
    featurizer_id: str
    pca_version: str
    classifier_version: str


@dataclass(frozen=True)
class NutritionPer100g:
    energy_kcal: float | None = None
    water_g: float | None = None
    sugars_g: float | None = None
    fibre_g: float | None = None
    vitamin_c_mg: float | None = None
    potassium_mg: float | None = None


@dataclass(frozen=True)
class FruitInfo:
    common_name: str
    nutrition: NutritionPer100g
    storage_advice: str
    sources: list[str]


@dataclass(frozen=True)
class Prediction(Record):
    SCHEMA = "Prediction"

    photo: PhotoRef
    predicted_at: datetime
    label: str
    confidence: float
    top5: list[ScoredLabel]
    model_versions: ModelVersions
    fruit_type: str | None = None
    """None only in predictions written with schema v1 (before fruit types)."""
    type_confidence: float | None = None
    top5_types: list[ScoredLabel] = field(default_factory=list)
    unsure: bool = False
    fruit: FruitInfo | None = None


@dataclass(frozen=True)
class DeadLetter(Record):
    SCHEMA = "DeadLetter"

    source_topic: str
    source_partition: int
    source_offset: int
    stage: str
    error_class: str
    error_message: str
    failed_at: datetime
    photo_id: str | None = None
    original_key: bytes | None = None
    original_value: bytes | None = None


@dataclass(frozen=True)
class Feedback(Record):
    """A user's verdict on the answer to their photo (from the HTTP gateway)."""

    SCHEMA = "Feedback"

    photo_id: str
    user_id: str
    region: str
    original_uri: str
    given_at: datetime
    predicted_label: str
    correct: bool
    model_versions: ModelVersions
    predicted_type: str | None = None
    unsure: bool = False
    corrected_type: str | None = None


RECORD_TYPES: tuple[type[Record], ...] = (
    PhotoEvent, IngestedPhoto, PreprocessedPhoto, PhotoFeatures, ReducedFeatures, Prediction, DeadLetter, Feedback,
)  # fmt: skip


def encode_record(record: Record) -> bytes:
    """Avro single-object bytes of ``record``."""
    return record.avro_type().encode(record.to_avro())


def decode_record(record_type: type[R], data: bytes | None) -> R:
    """The record in ``data``; raises RecordError if it is not a ``record_type``."""
    return record_type.from_avro(record_type.avro_type().decode(data))


def photo_id_of(record: Record) -> str | None:
    """The photo a record is about (dead letters name it)."""
    photo = getattr(record, "photo", record)
    return getattr(photo, "photo_id", None)


# --- dict conversion ---------------------------------------------------------------------------


def _to_avro(value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for spec in fields(value):
        item = getattr(value, spec.name)
        if isinstance(item, PhotoRef):
            out.update(_shallow(item))
        elif dataclasses.is_dataclass(item):
            out[spec.name] = _to_avro(item)
        elif isinstance(item, list) and item and dataclasses.is_dataclass(item[0]):
            out[spec.name] = [_to_avro(element) for element in item]
        else:
            out[spec.name] = item
    return out


def _shallow(value: Any) -> dict[str, Any]:
    return {spec.name: getattr(value, spec.name) for spec in fields(value)}


@cache
def _decoder(cls: type) -> Callable[[dict[str, Any]], Any]:
    """A function building ``cls`` from its Avro dict, made once per class from its type hints."""
    hints = typing.get_type_hints(cls)
    convert: dict[str, Callable[[Any], Any] | None] = {}
    embedded: list[str] = []
    for spec in fields(cls):
        hint = hints[spec.name]
        if hint is PhotoRef:
            embedded.append(spec.name)
        else:
            convert[spec.name] = _converter(hint)
    ref_names = [spec.name for spec in fields(PhotoRef)]

    def decode(data: dict[str, Any]) -> Any:
        kwargs = {name: (data[name] if fn is None else fn(data[name])) for name, fn in convert.items()}
        for name in embedded:
            kwargs[name] = PhotoRef(*(data[key] for key in ref_names))
        return cls(**kwargs)

    return decode


def _converter(hint: Any) -> Callable[[Any], Any] | None:
    """How to build a value of type ``hint`` from fastavro's value; None: use it as it is."""
    if dataclasses.is_dataclass(hint):
        nested = _decoder(hint)
        return nested
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        inner_convert = _converter(inner)
        return None if inner_convert is None else (lambda v: None if v is None else inner_convert(v))
    if origin is list:
        (item,) = typing.get_args(hint)
        item_convert = _converter(item)
        return None if item_convert is None else (lambda v: [item_convert(element) for element in v])
    return None

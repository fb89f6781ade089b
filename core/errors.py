"""Why a record goes to the dead-letter topic instead of stopping a service."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import TypeVar

T = TypeVar("T")
U = TypeVar("U")
V = TypeVar("V")


class Reason(StrEnum):
    """Every dead-letter reason: the dead letter's ``error_class``, the ``reason`` label of
    ``fruits_dead_letters_total`` and the ``error_class`` of the lake's ``rejected`` table.
    A bounded set, so metric labels stay bounded."""

    # The Kafka value is not a record of the expected type (core.avro, the Spark job).
    EMPTY_RECORD = "empty_record"
    NOT_AVRO_SINGLE_OBJECT = "not_avro_single_object"
    FOREIGN_SCHEMA = "foreign_schema"
    CORRUPT_AVRO = "corrupt_avro"
    # The photo event is invalid (ingest).
    BAD_EVENT = "bad_event"
    BAD_PHOTO_ID = "bad_photo_id"
    BAD_USER_ID = "bad_user_id"
    FIELD_TOO_LONG = "field_too_long"
    UNKNOWN_REGION = "unknown_region"
    BAD_IMAGE_URI = "bad_image_uri"
    IMAGE_NOT_FOUND = "image_not_found"
    FORBIDDEN_IMAGE_URI = "forbidden_image_uri"
    # The event repeats one already stored (ingest).
    DUPLICATE_EVENT = "duplicate_event"
    DUPLICATE_PHOTO_ID = "duplicate_photo_id"
    # The image is not one we can use (ingest, preprocess).
    EMPTY_IMAGE = "empty_image"
    IMAGE_TOO_LARGE = "image_too_large"
    UNSUPPORTED_TYPE = "unsupported_type"
    UNDECODABLE_IMAGE = "undecodable_image"
    CORRUPT_METADATA = "corrupt_metadata"
    # A record does not fit the model (featurize, reduce, predict).
    BAD_TENSOR = "bad_tensor"
    BAD_FEATURES = "bad_features"
    UNKNOWN_MODEL_VERSION = "unknown_model_version"


class RecordError(Exception):
    """This record cannot be processed; the stage carries on with the next one.

    ``reason`` says why, for machines (a bounded ``Reason``); the message explains it to
    a human. Any other exception is a bug or an outage: the service stops without
    committing, so the record is retried after a restart rather than lost.
    """

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = Reason(reason)


def map_valid(
    items: Sequence[T | RecordError],
    check: Callable[[T], U],
    apply: Callable[[list[U]], Sequence[V | RecordError]],
) -> list[V | RecordError]:
    """One outcome per item, in order: ``check`` each item (a RecordError it raises rejects
    that item; an item that already is a RecordError stays rejected), then ``apply`` once to
    the checked values of the valid items (one batched call), whose outcomes fill their places."""
    checked: list[U | RecordError] = []
    for item in items:
        if isinstance(item, RecordError):
            checked.append(item)
            continue
        try:
            checked.append(check(item))
        except RecordError as error:
            checked.append(error)
    valid = [value for value in checked if not isinstance(value, RecordError)]
    applied = apply(valid) if valid else []
    if len(applied) != len(valid):
        raise ValueError(f"apply returned {len(applied)} outcomes for {len(valid)} valid items")
    results = iter(applied)
    return [value if isinstance(value, RecordError) else next(results) for value in checked]

"""Why a record goes to the dead-letter topic instead of stopping a service."""

from __future__ import annotations

import socket
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
    # The stage kept failing on this record with an unexpected exception (a bug, not a verdict on
    # the record): tried a bounded number of times, then set aside so the others go on.
    INTERNAL_ERROR = "internal_error"


class RecordError(Exception):
    """This record cannot be processed; the stage carries on with the next one.

    ``reason`` says why, for machines (a bounded ``Reason``); the message explains it to
    a human. A ``DependencyError`` is an outage: the batch is waited out and redone. Any
    other exception is a bug: the batch is retried, then the records it keeps failing on are
    dead-lettered as ``internal_error`` (``core.kafka``).
    """

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = Reason(reason)


class DependencyError(Exception):
    """A service the stage depends on (Kafka, S3, the model store) is away or refuses us: never the
    record's fault. The stage loop aborts the batch, waits with backoff and redoes it; nothing is
    dead-lettered for it. The message names the dependency and the error, never a payload."""

    def __init__(self, dependency: str, message: str) -> None:
        super().__init__(f"{dependency}: {message}")
        self.dependency = dependency
        self.detail = message


NETWORK_ERRORS = (ConnectionError, TimeoutError, socket.gaierror)
"""Python's own network failures (refused, reset, timed out, name resolution)."""


def dependency_error(exc: BaseException) -> DependencyError | None:
    """``exc`` as a DependencyError if it is one, or a network failure, or was raised while
    handling one (a client library's wrapper of a refused connection); else None."""
    seen: BaseException | None = exc
    for _ in range(8):  # a short cause chain: a wrapper of a wrapper of the socket error
        if seen is None:
            return None
        if isinstance(seen, DependencyError):
            return seen
        if isinstance(seen, NETWORK_ERRORS):
            return DependencyError("network", f"{type(exc).__name__} ({type(seen).__name__})")
        seen = seen.__cause__ or seen.__context__
    return None


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

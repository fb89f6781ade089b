"""Dependency outages (S3, the model store) are told apart from a record's faults: they raise
DependencyError, which the stage loop waits out and never dead-letters."""

from __future__ import annotations

import io
import logging

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ParamValidationError, ReadTimeoutError

from core.errors import DependencyError, RecordError, dependency_error
from core.model import CurrentBundle, ModelStore
from core.s3 import is_outage, read_object, s3_dependency
from tests.unit.fakes import MemoryS3
from tests.unit.test_model import described, identity_bundle


def client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


@pytest.mark.parametrize(
    ("error", "outage"),
    [
        (EndpointConnectionError(endpoint_url="http://s3"), True),
        (ReadTimeoutError(endpoint_url="http://s3"), True),
        (client_error("SlowDown", 503), True),
        (client_error("InternalError", 500), True),
        (client_error("503", 503), True),  # HEAD answers carry the status alone
        (client_error("InvalidAccessKeyId", 403), True),  # our credentials, not the record
        (client_error("NoSuchKey", 404), False),
        (client_error("404", 404), False),
        (client_error("AccessDenied", 403), False),
        (ParamValidationError(report="bad bucket name"), False),
        (ValueError("x"), False),
    ],
)
def test_what_counts_as_s3_being_away(error, outage):
    assert is_outage(error) is outage
    with pytest.raises(DependencyError if outage else type(error)) as raised, s3_dependency():
        raise error
    assert (raised.value is not error) is outage  # an outage is turned into a DependencyError, the rest passes


class FailingS3(MemoryS3):
    """MemoryS3 whose calls raise ``error`` while it is set."""

    def __init__(self) -> None:
        super().__init__()
        self.error: Exception | None = None

    def head_object(self, Bucket: str, Key: str) -> dict:
        if self.error:
            raise self.error
        if (Bucket, Key) not in self.objects:
            raise client_error("404", 404)
        return {"ContentLength": len(self.objects[Bucket, Key])}

    def get_object(self, Bucket: str, Key: str) -> dict:
        if self.error:
            raise self.error
        return super().get_object(Bucket, Key)


def test_reading_a_record_s_object_tells_an_outage_from_a_missing_object():
    s3 = FailingS3()
    s3.objects["b", "k"] = b"photo"
    assert read_object(s3, "s3://b/k", 100) == b"photo"
    with pytest.raises(RecordError) as missing:
        read_object(s3, "s3://b/gone", 100)
    assert missing.value.reason == "image_not_found"
    s3.error = EndpointConnectionError(endpoint_url="http://s3")
    with pytest.raises(DependencyError):
        read_object(s3, "s3://b/k", 100)
    s3.error = client_error("SlowDown", 503)
    with pytest.raises(DependencyError):
        read_object(s3, "s3://b/k", 100)


def test_the_model_store_being_away_is_a_dependency_error():
    s3 = FailingS3()
    store = ModelStore(s3, "models")
    store.save(described(identity_bundle()))
    s3.error = EndpointConnectionError(endpoint_url="http://s3")
    with pytest.raises(DependencyError, match="^model store: EndpointConnectionError"):
        store.current_version()
    s3.error = None
    assert store.current_version() == identity_bundle().version


def test_the_current_bundle_stays_in_use_while_the_store_is_away(caplog):
    s3 = FailingS3()
    store = ModelStore(s3, "models")
    store.save(described(identity_bundle()))
    now = [0.0]
    current = CurrentBundle(store, refresh_seconds=5, clock=lambda: now[0])
    assert current.get().version == identity_bundle().version
    s3.error = EndpointConnectionError(endpoint_url="http://s3")
    now[0] = 10.0
    assert current.get().version == identity_bundle().version
    assert "cannot check for a new model bundle" in caplog.text
    fresh = CurrentBundle(store, refresh_seconds=5, clock=lambda: now[0])
    with pytest.raises(DependencyError):  # nothing to keep using: the stage waits
        fresh.get()


def test_waiting_for_a_first_bundle_waits_out_the_store_being_away(caplog, monkeypatch):
    s3 = FailingS3()
    store = ModelStore(s3, "models")
    store.save(described(identity_bundle()))
    s3.error = client_error("ServiceUnavailable", 503)
    tries, now = [], [0.0]

    def sleep(seconds: float) -> None:
        tries.append(seconds)
        now[0] += seconds
        if len(tries) == 3:
            s3.error = None

    monkeypatch.setattr("core.model.time.sleep", sleep)
    caplog.set_level(logging.WARNING)
    bundle = CurrentBundle(store, refresh_seconds=1, clock=lambda: now[0]).wait(lambda: False)
    assert bundle is not None and len(tries) == 3
    assert "waiting for the model store" in caplog.text


def test_network_errors_and_their_wrappers_are_dependency_errors():
    assert dependency_error(ConnectionResetError()) is not None
    assert dependency_error(TimeoutError()) is not None
    try:
        try:
            raise ConnectionRefusedError()
        except ConnectionRefusedError as refused:
            raise RuntimeError("wrapped") from refused
    except RuntimeError as wrapper:
        assert dependency_error(wrapper) is not None
    assert dependency_error(ValueError("not the network")) is None
    assert dependency_error(OSError("cannot identify image file")) is None  # PIL's, a record's fault
    assert dependency_error(io.UnsupportedOperation()) is None

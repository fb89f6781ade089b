"""The requests our boto3 client sends (caught before they leave: no server needed)."""

import io

import pytest
from botocore.awsrequest import AWSResponse

from core.s3 import EXPECT_CONTINUE_MIN_BYTES, s3_client
from core.settings import Settings


class EmptyBody:
    """What botocore reads an answer's body from (urllib3's response, here with nothing in it)."""

    def stream(self, chunk_size=1024, decode_content=True):
        return iter(())


@pytest.fixture
def sent(monkeypatch):
    """A client whose requests are kept instead of sent (each answered 200, empty)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    client = s3_client(Settings(s3_endpoint_url="https://127.0.0.1:1", s3_sse=""))
    requests = []

    def keep(request, **_):
        requests.append(request)
        return AWSResponse(request.url, 200, {}, EmptyBody())

    client.meta.events.register("before-send.s3", keep)
    return client, requests


@pytest.mark.parametrize("body", [b"x" * 5_000, io.BytesIO(b"x" * 5_000)], ids=["bytes", "file"])
def test_a_photo_sized_put_sends_its_body_without_asking_first(sent, body):
    client, requests = sent
    client.put_object(Bucket="b", Key="k", Body=body, IfNoneMatch="*")
    (request,) = requests
    assert "Expect" not in request.headers
    assert request.headers["If-None-Match"] == b"*"


def test_a_large_put_still_asks_before_sending_its_body(sent):
    client, requests = sent
    client.put_object(Bucket="b", Key="k", Body=io.BytesIO(b"x" * EXPECT_CONTINUE_MIN_BYTES))
    (request,) = requests
    assert request.headers["Expect"] == b"100-continue"

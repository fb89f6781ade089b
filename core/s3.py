"""S3 access (boto3), identical for the embedded SeaweedFS and AWS, and what counts as S3
being away (``is_outage``: the stage loop waits those out). boto3 is imported when a client
is made: a process that only classifies errors (featurize's loop) does not load it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from botocore import exceptions as boto
from botocore.exceptions import BotoCoreError, ClientError
from botocore.utils import determine_content_length

from core.errors import DependencyError, Reason, RecordError
from core.settings import Settings

OUTAGE_ERRORS = (
    boto.ConnectionError,  # EndpointConnectionError, ConnectTimeoutError, SSL and proxy errors
    boto.HTTPClientError,  # ReadTimeoutError, ConnectionClosedError, ResponseStreamingError
    boto.IncompleteReadError,
    boto.NoCredentialsError,
    boto.PartialCredentialsError,
)
"""botocore's errors that say S3 could not be reached or asked (not what it answered)."""
OUTAGE_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "RequestTimeout",
    "ServiceUnavailable", "InternalError", "InvalidAccessKeyId", "SignatureDoesNotMatch",
    "ExpiredToken", "RequestTimeTooSkewed",
})  # fmt: skip
"""S3 error codes that are the service's state or our credentials, never the record's fault."""


EXPECT_CONTINUE_MIN_BYTES = 1 << 20
"""Smallest body a request first asks leave to send (``Expect: 100-continue``). botocore
asks for every body; for a photo that costs a round trip, the server's interim answer and
25 one-byte TLS reads — 0.1 ms of client and 0.1 ms of server CPU per 5-KB put (measured) —
to save resending a body S3 would refuse, which only pays for large ones."""

ENCRYPTED_WRITES = ("PutObject", "CreateMultipartUpload", "CopyObject")
"""The requests that create objects: each asks for the configured server-side encryption."""


def sse_arguments(settings: Settings) -> dict[str, str]:
    """The boto3 arguments of a write under FRUITS_S3_SSE (none when it is empty)."""
    if not settings.s3_sse:
        return {}
    arguments = {"ServerSideEncryption": settings.s3_sse}
    if settings.s3_sse == "aws:kms" and settings.s3_sse_kms_key_id:
        arguments["SSEKMSKeyId"] = settings.s3_sse_kms_key_id
    return arguments


def s3_client(settings: Settings) -> Any:
    """A boto3 S3 client of this process's identity, trusting the configured CA, whose every
    write requests the configured server-side encryption (unless the call names its own)."""
    client = _client(settings)
    if sse := sse_arguments(settings):

        def encrypt(params: dict[str, Any], **_: Any) -> None:
            for name, value in sse.items():
                params.setdefault(name, value)

        for operation in ENCRYPTED_WRITES:
            client.meta.events.register(f"provide-client-params.s3.{operation}", encrypt)
    # After botocore's own before-call handler, which adds the header.
    client.meta.events.register("before-call.s3", expect_continue_for_large_bodies)
    return client


def expect_continue_for_large_bodies(params: dict[str, Any], **_: Any) -> None:
    """Drop botocore's ``Expect: 100-continue`` from a request whose body is smaller than
    EXPECT_CONTINUE_MIN_BYTES (or of unknown length: kept)."""
    headers = params.get("headers", {})
    if headers.get("Expect") != "100-continue":
        return
    size = determine_content_length(params.get("body"))
    if size is not None and size < EXPECT_CONTINUE_MIN_BYTES:
        del headers["Expect"]


def _client(settings: Settings) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        config=Config(
            connect_timeout=5,
            read_timeout=30,
            retries={"max_attempts": 5, "mode": "standard"},
            max_pool_connections=16,
            # Payload checksums cost CPU on every put; TLS and Content-Length already
            # protect the transfer, and ingest records its own sha256 of each original.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
        **settings.s3_client_kwargs(),
    )


def is_outage(exc: BaseException) -> bool:
    """True if ``exc`` means S3 is away, overloaded or refuses our credentials: waited out by
    the stage loop, never a verdict on a record (a 5xx, throttling, a connection failure)."""
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return status >= 500 or exc.response.get("Error", {}).get("Code", "") in OUTAGE_CODES
    return isinstance(exc, OUTAGE_ERRORS)


@contextmanager
def s3_dependency(name: str = "S3") -> Iterator[None]:
    """Turn an S3 outage raised inside into a DependencyError naming ``name``; other errors pass."""
    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        if not is_outage(exc):
            raise
        code = exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""
        raise DependencyError(name, f"{type(exc).__name__} {code}".strip()) from exc


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` → (bucket, key)."""
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise RecordError(Reason.BAD_IMAGE_URI, f"not an s3://bucket/key URI: {uri!r}")
    bucket, key = uri[5:].split("/", 1)
    if not bucket or not key:
        raise RecordError(Reason.BAD_IMAGE_URI, f"not an s3://bucket/key URI: {uri!r}")
    return bucket, key


def read_object(client: Any, uri: str, max_bytes: int) -> bytes:
    """Read an object that a record refers to, refusing it if it is too large."""
    bucket, key = parse_s3_uri(uri)
    try:
        with s3_dependency():  # S3 away: a DependencyError, waited out; a missing object: the record's
            head = client.head_object(Bucket=bucket, Key=key)
            if head["ContentLength"] > max_bytes:
                raise RecordError(
                    Reason.IMAGE_TOO_LARGE, f"{uri} is {head['ContentLength']:,} bytes, over the limit of {max_bytes:,}"
                )
            return client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("404", "NoSuchKey", "NoSuchBucket", "403", "AccessDenied"):
            raise RecordError(Reason.IMAGE_NOT_FOUND, f"cannot read {uri}: {code}") from exc
        raise


def check_bucket(client: Any, bucket: str, endpoint: str) -> None:
    """Raise a clear ConnectionError if ``bucket`` cannot be reached with our credentials."""
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("404", "NoSuchBucket"):
            raise ConnectionError(f"bucket {bucket!r} does not exist at {endpoint} (`make up` creates it)") from exc
        raise ConnectionError(
            f"S3 at {endpoint} refused access to bucket {bucket!r} ({code}): check credentials"
        ) from exc
    except BotoCoreError as exc:
        raise ConnectionError(f"cannot reach S3 at {endpoint} (is the stack up? `make up`): {exc}") from exc

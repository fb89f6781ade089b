"""S3 on the local stack: TLS only, one key pair per identity, and each identity can do what
``tools.s3_rights`` grants it and nothing else; what is written is encrypted (SSE-S3)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, SSLError

from core import lake
from core.s3 import read_object, s3_client
from core.settings import Settings
from tests.integration import as_identity as identity
from tools.s3_rights import Bucket

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
SEEDED = {  # written by admin before the checks: bucket → key
    Bucket.REGION: f"uploads/security-{RUN}",
    Bucket.MODEL: f"security/{RUN}",
    Bucket.LAKE: f"security/{RUN}",
}
ORIGINAL = f"originals/security-{RUN}"


def bucket_of(settings: Settings, bucket: Bucket) -> str:
    return {
        Bucket.MODEL: settings.model_bucket,
        Bucket.LAKE: settings.lake_bucket,
        Bucket.REGION: settings.region_buckets["eu"],
    }[bucket]


def as_identity(settings: Settings, who: str) -> Any:
    return s3_client(identity(settings, who))


@pytest.fixture(scope="module")
def seeded(stack: Settings) -> Settings:
    admin = as_identity(stack, "admin")
    for bucket, key in SEEDED.items():
        admin.put_object(Bucket=bucket_of(stack, bucket), Key=key, Body=b"seed")
    admin.put_object(Bucket=bucket_of(stack, Bucket.REGION), Key=ORIGINAL, Body=b"original")
    return stack


def get(client: Any, bucket: str, key: str) -> None:
    client.get_object(Bucket=bucket, Key=key)["Body"].read()


def put(client: Any, bucket: str, key: str) -> None:
    client.put_object(Bucket=bucket, Key=f"{key}-{uuid.uuid4().hex[:6]}", Body=b"x")


def list_(client: Any, bucket: str, key: str) -> None:
    client.list_objects_v2(Bucket=bucket, Prefix=key.rsplit("/", 1)[0] + "/")


Operation = Callable[[Any, str, str], None]
R, M, L = Bucket.REGION, Bucket.MODEL, Bucket.LAKE
UPLOAD, MODEL_KEY, LAKE_KEY = SEEDED[R], SEEDED[M], SEEDED[L]

ALLOWED: list[tuple[str, Operation, Bucket, str]] = [
    ("ingest", get, R, UPLOAD),  # a large photo's s3:// reference
    ("ingest", put, R, ORIGINAL),  # the GPS-free original
    ("ingest", get, R, ORIGINAL),  # is this photo id stored already? (duplicate events and ids)
    ("preprocess", get, R, ORIGINAL),
    ("reduce", get, M, MODEL_KEY),
    ("reduce", list_, M, MODEL_KEY),
    ("predict", get, M, MODEL_KEY),
    ("spark", get, L, LAKE_KEY),
    ("spark", put, L, LAKE_KEY),
    ("spark", list_, L, LAKE_KEY),
    ("spark", get, M, MODEL_KEY),
    ("spark", put, M, MODEL_KEY),  # it publishes bundles
    ("client", put, R, UPLOAD),
    ("gateway", put, R, UPLOAD),  # users' large photos
    ("admin", put, R, ORIGINAL),
    ("admin", get, M, MODEL_KEY),
    ("admin", put, L, LAKE_KEY),
]
REFUSED: list[tuple[str, Operation, Bucket, str]] = [
    ("client", put, M, MODEL_KEY),  # a client publishing a model
    ("client", put, R, ORIGINAL),  # … or forging an original
    ("client", put, L, LAKE_KEY),
    ("client", get, R, UPLOAD),  # it cannot even read back what it uploaded
    ("client", list_, R, UPLOAD),
    ("gateway", put, R, ORIGINAL),  # `fruits users delete` erases originals as admin, not the gateway
    ("gateway", get, R, UPLOAD),
    ("gateway", get, R, ORIGINAL),
    ("gateway", put, M, MODEL_KEY),
    ("ingest", put, R, UPLOAD),
    ("ingest", get, M, MODEL_KEY),  # a photo event naming the model store is no way in
    ("ingest", get, L, LAKE_KEY),
    ("preprocess", get, R, UPLOAD),
    ("preprocess", put, R, ORIGINAL),
    ("reduce", put, M, MODEL_KEY),
    ("predict", put, M, MODEL_KEY),
    ("predict", get, R, ORIGINAL),
    ("predict", get, L, LAKE_KEY),
    ("spark", get, R, ORIGINAL),
    ("spark", put, R, UPLOAD),
]


def _id(case: tuple[str, Operation, Bucket, str]) -> str:
    identity, operation, bucket, key = case
    return f"{identity}-{operation.__name__.strip('_')}-{bucket.value}-{key.split('/')[0]}"


@pytest.mark.parametrize("case", ALLOWED, ids=_id)
def test_each_identity_can_do_what_it_must(seeded: Settings, case) -> None:
    identity, operation, bucket, key = case
    operation(as_identity(seeded, identity), bucket_of(seeded, bucket), key)


@pytest.mark.parametrize("case", REFUSED, ids=_id)
def test_each_identity_is_refused_the_rest(seeded: Settings, case) -> None:
    identity, operation, bucket, key = case
    with pytest.raises(ClientError) as refused:
        operation(as_identity(seeded, identity), bucket_of(seeded, bucket), key)
    assert refused.value.response["Error"]["Code"] in ("AccessDenied", "403")


def test_spark_deletes_in_the_lake(seeded: Settings) -> None:
    """S3A renames and overwrites delete: spark may, in the lake."""
    key = f"security/{RUN}-doomed"
    lake_bucket = seeded.lake_bucket
    as_identity(seeded, "admin").put_object(Bucket=lake_bucket, Key=key, Body=b"x")
    as_identity(seeded, "spark").delete_object(Bucket=lake_bucket, Key=key)
    with pytest.raises(ClientError):
        as_identity(seeded, "admin").head_object(Bucket=lake_bucket, Key=key)


def test_ingest_reads_an_uploaded_photo_as_the_service_does(seeded: Settings) -> None:
    uri = f"s3://{seeded.region_buckets['eu']}/{UPLOAD}"
    assert read_object(as_identity(seeded, "ingest"), uri, 1024) == b"seed"


def test_featurize_has_no_s3_identity(seeded: Settings) -> None:
    with pytest.raises(ClientError) as refused:
        get(as_identity(seeded, "featurize"), seeded.model_bucket, MODEL_KEY)
    assert refused.value.response["Error"]["Code"] == "InvalidAccessKeyId"


def test_admin_manages_the_app_buckets_only(seeded: Settings) -> None:
    admin = as_identity(seeded, "admin")
    admin.head_bucket(Bucket=seeded.model_bucket)
    with pytest.raises(ClientError) as refused:
        admin.create_bucket(Bucket=f"not-ours-{RUN}")
    assert refused.value.response["Error"]["Code"] == "AccessDenied"


def _with(settings: Settings, who: str, **override: Any) -> Any:
    kwargs = {**identity(settings, who).s3_client_kwargs(), **override}
    return boto3.client("s3", config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=5), **kwargs)


def test_a_wrong_secret_is_refused(seeded: Settings) -> None:
    with pytest.raises(ClientError) as refused:
        put(_with(seeded, "client", aws_secret_access_key="not-the-secret"), seeded.region_buckets["eu"], UPLOAD)
    assert refused.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


def test_another_identitys_key_with_its_own_secret_is_refused(seeded: Settings) -> None:
    client_key = identity(seeded, "client").s3_credentials()
    spark_key = identity(seeded, "spark").s3_credentials()
    assert client_key and spark_key
    forged = _with(seeded, "client", aws_access_key_id=spark_key[0])  # spark's key id, client's secret
    with pytest.raises(ClientError) as refused:
        put(forged, seeded.lake_bucket, LAKE_KEY)
    assert refused.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


def test_plain_http_to_the_s3_port_gets_no_answer(seeded: Settings) -> None:
    assert seeded.s3_endpoint_url.startswith("https://")
    plain = _with(seeded, "admin", endpoint_url=seeded.s3_endpoint_url.replace("https://", "http://"))
    with pytest.raises((BotoCoreError, ClientError)) as failed:
        plain.list_objects_v2(Bucket=seeded.model_bucket)
    assert not isinstance(failed.value, ClientError) or failed.value.response["Error"]["Code"] == "400"


def test_the_server_certificate_is_not_trusted_without_the_stacks_ca(seeded: Settings) -> None:
    with pytest.raises(SSLError):
        _with(seeded, "admin", verify=True).list_objects_v2(Bucket=seeded.model_bucket)  # the system's CAs only


def _stored_bytes(settings: Settings) -> bytes:
    return b"".join(path.read_bytes() for path in (settings.state_dir / "seaweedfs").rglob("*.dat"))


def test_objects_are_encrypted_at_rest(seeded: Settings) -> None:
    """SSE-S3 as every write asks for it (FRUITS_S3_SSE=AES256): the stored volume holds no
    plaintext of it, while an object written without it into a bucket without default
    encryption (the control) is found there in clear."""
    if not (seeded.state_dir / "seaweedfs").is_dir():
        pytest.skip("an existing S3 server: its storage is not ours to read")
    assert seeded.s3_sse == "AES256"
    bucket, admin = seeded.lake_bucket, as_identity(seeded, "admin")
    encrypted, plain = os.urandom(8192), os.urandom(8192)
    spark = as_identity(seeded, "spark")
    spark.put_object(Bucket=bucket, Key=f"security/{RUN}-encrypted", Body=encrypted)
    default = admin.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
    admin.delete_bucket_encryption(Bucket=bucket)
    try:
        as_identity(seeded.model_copy(update={"s3_sse": ""}), "spark").put_object(
            Bucket=bucket, Key=f"security/{RUN}-plain", Body=plain
        )
    finally:
        admin.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=default)
    head = spark.head_object(Bucket=bucket, Key=f"security/{RUN}-encrypted")
    assert head.get("ServerSideEncryption") == "AES256"
    assert spark.get_object(Bucket=bucket, Key=f"security/{RUN}-encrypted")["Body"].read() == encrypted
    deadline = time.monotonic() + 15
    while plain[1000:1064] not in (stored := _stored_bytes(seeded)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert plain[1000:1064] in stored, "the control object never reached the volume files"
    assert encrypted[1000:1064] not in stored


def test_writes_that_do_not_ask_are_encrypted_by_the_buckets_default(seeded: Settings) -> None:
    unasked = as_identity(seeded.model_copy(update={"s3_sse": ""}), "spark")
    unasked.put_object(Bucket=seeded.lake_bucket, Key=f"security/{RUN}-unasked", Body=b"x")
    head = unasked.head_object(Bucket=seeded.lake_bucket, Key=f"security/{RUN}-unasked")
    assert head.get("ServerSideEncryption") == "AES256"


def test_provisioned_buckets_encrypt_by_default(seeded: Settings) -> None:
    admin = as_identity(seeded, "admin")
    for bucket in (seeded.model_bucket, seeded.lake_bucket, *seeded.region_buckets.values()):
        rules = admin.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
        assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256", bucket


def test_pyarrow_reads_the_lake_over_tls_as_its_identity(seeded: Settings, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = f"security-{RUN}"
    pq.write_table(pa.table({"photo_id": ["a", "b"]}), tmp_path / "part.parquet")
    as_identity(seeded, "spark").put_object(
        Bucket=seeded.lake_bucket, Key=f"{table}/part.parquet", Body=(tmp_path / "part.parquet").read_bytes()
    )
    assert lake.read_table(identity(seeded, "spark"), table).column("photo_id").to_pylist() == ["a", "b"]
    with pytest.raises(OSError):
        lake.read_table(identity(seeded, "predict"), table)

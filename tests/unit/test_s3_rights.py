"""The S3 rights table and what is made of it (SeaweedFS identities, IAM policies, the README's
table), and the S3 clients' encryption and trust settings; no server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from botocore.stub import Stubber

from core.s3 import s3_client
from core.settings import IDENTITIES, PROJECT_ROOT, Settings
from spark.session import s3a_conf, spark_conf
from tools.s3_rights import (
    EXAMPLE_KMS_KEY_ARN,
    RIGHTS,
    Access,
    Bucket,
    BucketNames,
    grant,
    iam_policy,
    markdown_table,
    seaweedfs_actions,
    write_iam_policies,
)

DEFAULTS = Settings()
NAMES = BucketNames.of(DEFAULTS)
REGIONS = tuple(DEFAULTS.region_buckets.values())


def test_every_identity_has_its_rights_and_featurize_none() -> None:
    assert set(RIGHTS) == set(IDENTITIES)
    assert RIGHTS["featurize"] == ()
    assert seaweedfs_actions("featurize", NAMES) == [] and iam_policy("featurize", NAMES) is None


def test_seaweedfs_actions_of_the_pipeline_identities() -> None:
    assert seaweedfs_actions("client", NAMES) == [f"Write:{b}/uploads/*" for b in REGIONS]
    assert seaweedfs_actions("ingest", NAMES) == [
        *(f"Read:{b}/uploads/*" for b in REGIONS),
        *(action for b in REGIONS for action in (f"Read:{b}/originals/*", f"Write:{b}/originals/*")),
    ]
    assert seaweedfs_actions("preprocess", NAMES) == [f"Read:{b}/originals/*" for b in REGIONS]
    assert seaweedfs_actions("reduce", NAMES) == ["Read:fruits-models", "List:fruits-models"]
    assert seaweedfs_actions("spark", NAMES) == [
        "Read:fruits-lake", "Write:fruits-lake", "List:fruits-lake",  # delete is Write there
        "Read:fruits-models", "Write:fruits-models", "List:fruits-models",
    ]  # fmt: skip


def test_admin_is_admin_of_the_app_buckets_only() -> None:
    actions = seaweedfs_actions("admin", NAMES)
    assert {a for a in actions if a.startswith("Admin")} == {
        f"Admin:{b}" for b in ("fruits-models", "fruits-lake", *REGIONS)
    }
    assert "Admin" not in actions  # unscoped, it would be admin of every bucket


def test_who_may_write_what() -> None:
    """The invariants the table exists for, whatever else changes in it."""
    writers = {
        bucket: {i for i, grants in RIGHTS.items() for g in grants if g.bucket == bucket and Access.WRITE in g.access}
        for bucket in Bucket
    }
    assert writers[Bucket.MODEL] == {"spark", "admin"}
    assert writers[Bucket.LAKE] == {"spark", "admin"}
    assert writers[Bucket.REGION] == {"ingest", "gateway", "client", "admin"}
    region_writes = {i: g.prefix for i, grants in RIGHTS.items() for g in grants if g.bucket == Bucket.REGION
                     and Access.WRITE in g.access}  # fmt: skip
    assert region_writes == {"ingest": "originals/", "gateway": "uploads/", "client": "uploads/", "admin": ""}
    managers = {i for i, grants in RIGHTS.items() for g in grants if Access.MANAGE in g.access}
    assert managers == {"admin"}


def test_listing_cannot_be_limited_to_a_prefix() -> None:
    with pytest.raises(ValueError, match="per bucket"):
        grant(Bucket.REGION, Access.LIST, prefix="uploads/")


def test_bucket_names_accumulate() -> None:
    other = DEFAULTS.model_copy(update={"model_bucket": "test-models"})
    names = NAMES.union(BucketNames.of(other))
    assert names.model == ("fruits-models", "test-models") and names.lake == ("fruits-lake",)
    assert BucketNames.from_json(json.loads(json.dumps(names.to_json()))) == names
    assert "Read:test-models" in seaweedfs_actions("reduce", names)


def test_iam_policy_of_the_client() -> None:
    policy = iam_policy("client", NAMES)
    assert policy == {"Version": "2012-10-17", "Statement": [{
        "Sid": "RegionUploadsObjects", "Effect": "Allow",
        "Action": ["s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
        "Resource": [f"arn:aws:s3:::{b}/uploads/*" for b in REGIONS],
    }]}  # fmt: skip


def test_iam_policies_name_the_kms_key_only_for_sse_kms() -> None:
    assert not any("kms" in json.dumps(iam_policy(i, NAMES)) for i in IDENTITIES if i != "featurize")
    reader = iam_policy("reduce", NAMES, EXAMPLE_KMS_KEY_ARN)
    assert reader is not None and reader["Statement"][-1]["Action"] == ["kms:Decrypt"]
    writer = iam_policy("client", NAMES, EXAMPLE_KMS_KEY_ARN)
    assert writer is not None and writer["Statement"][-1] == {
        "Sid": "SseKmsKey", "Effect": "Allow", "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
        "Resource": EXAMPLE_KMS_KEY_ARN,
    }  # fmt: skip


def test_committed_iam_policies_are_the_tables(tmp_path: Path) -> None:
    """deploy/aws/iam is generated (`python -m tools.s3_rights --iam deploy/aws/iam --kms-key-arn …`)."""
    written = write_iam_policies(tmp_path, NAMES, EXAMPLE_KMS_KEY_ARN)
    committed = PROJECT_ROOT / "deploy" / "aws" / "iam"
    assert sorted(p.name for p in committed.glob("*.json")) == sorted(p.name for p in written)
    for path in written:
        assert (committed / path.name).read_text() == path.read_text(), path.name


def test_readme_shows_the_table() -> None:
    assert markdown_table() in (PROJECT_ROOT / "README.md").read_text()


# --- Clients: encryption requested on writes, the CA trusted -----------------------------------


def _keys(**update: object) -> Settings:
    return Settings(s3_access_key_id="key", s3_secret_access_key="secret", **update)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("update", "expected"),
    [
        ({}, {"ServerSideEncryption": "AES256"}),
        ({"s3_sse": "aws:kms", "s3_sse_kms_key_id": "alias/fruits"},
         {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/fruits"}),
        ({"s3_sse": ""}, {}),
    ],
    ids=["sse-s3", "sse-kms", "none"],
)  # fmt: skip
def test_every_put_asks_for_the_configured_encryption(update: dict, expected: dict) -> None:
    client = s3_client(_keys(**update))
    with Stubber(client) as stub:
        stub.add_response("put_object", {}, {"Bucket": "b", "Key": "k", "Body": b"x", **expected})
        stub.add_response("create_multipart_upload", {"UploadId": "u"}, {"Bucket": "b", "Key": "k", **expected})
        client.put_object(Bucket="b", Key="k", Body=b"x")
        client.create_multipart_upload(Bucket="b", Key="k")
        stub.assert_no_pending_responses()


def test_s3a_asks_for_the_configured_encryption() -> None:
    assert s3a_conf(_keys())["spark.hadoop.fs.s3a.encryption.algorithm"] == "AES256"  # SSE-S3
    kms = s3a_conf(_keys(s3_sse="aws:kms", s3_sse_kms_key_id="alias/fruits"))
    assert kms["spark.hadoop.fs.s3a.encryption.algorithm"] == "SSE-KMS"
    assert kms["spark.hadoop.fs.s3a.encryption.key"] == "alias/fruits"
    assert "spark.hadoop.fs.s3a.encryption.algorithm" not in s3a_conf(_keys(s3_sse=""))


def test_s3a_uses_the_identitys_local_key_pair(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "spark.json").write_text(
        json.dumps({"s3_access_key_id": "fruits-spark-1", "s3_secret_access_key": "s3cret"})
    )
    conf = s3a_conf(Settings(state_dir=tmp_path, identity="spark"))
    assert (conf["spark.hadoop.fs.s3a.access.key"], conf["spark.hadoop.fs.s3a.secret.key"]) == (
        "fruits-spark-1",
        "s3cret",
    )
    assert "spark.hadoop.fs.s3a.access.key" not in s3a_conf(Settings(state_dir=tmp_path, identity="client"))


def test_the_jvm_trusts_the_local_ca_through_its_truststore(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, spark_jars_dir="", spark_master="")
    assert "spark.driver.extraJavaOptions" not in spark_conf(settings, "t")  # no local CA: the JVM's own
    settings.local_ca.parent.mkdir()
    settings.local_ca.write_text("CA")
    settings.local_truststore.write_bytes(b"p12")
    options = spark_conf(settings, "t")["spark.driver.extraJavaOptions"]
    assert f"-Djavax.net.ssl.trustStore={settings.local_truststore.resolve()}" in options
    assert "-Djavax.net.ssl.trustStoreType=PKCS12" in options
    plain = settings.model_copy(update={"s3_endpoint_url": "http://127.0.0.1:18333"})
    assert "spark.driver.extraJavaOptions" not in spark_conf(plain, "t")

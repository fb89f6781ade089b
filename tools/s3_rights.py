"""Who may do what on S3: the one table of each identity's rights (``RIGHTS``, for the
identities of ``core.settings.IDENTITIES``), and what is made of it — the local stack's
SeaweedFS identities (``seaweedfs_actions``), the AWS IAM policies in ``deploy/aws/iam/``
(``iam_policy``) and the README's table (``markdown_table``).

  python -m tools.s3_rights                         print the table (Markdown)
  python -m tools.s3_rights --iam deploy/aws/iam    write one IAM policy per identity, for the
                                                    buckets of the FRUITS_* settings

A grant names a kind of bucket (the model bucket, the lake bucket, every region bucket), the
access and optionally a key prefix. SeaweedFS checks deletes against its Write action: there,
whoever may write keys may delete them too; the IAM policies keep the two apart.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from core.settings import IDENTITIES, Settings
from tools import tool_parser


class Bucket(StrEnum):
    """Which of the settings' buckets a grant is on."""

    MODEL = "model"
    LAKE = "lake"
    REGION = "region"
    """Every region bucket (FRUITS_REGION_BUCKETS)."""


class Access(StrEnum):
    READ = "read"
    """Get and head objects."""
    WRITE = "write"
    """Put objects (multipart uploads and copies included)."""
    DELETE = "delete"
    """Delete objects (S3A's renames and overwrites)."""
    LIST = "list"
    """List the bucket's keys (also what tells a missing key, 404, from a forbidden one, 403, on AWS)."""
    MANAGE = "manage"
    """Create the bucket, set its default encryption, see it in ListBuckets."""


@dataclass(frozen=True)
class Grant:
    bucket: Bucket
    access: frozenset[Access]
    prefix: str = ""
    """Key prefix the grant is limited to (``uploads/``); empty: the whole bucket."""

    def __post_init__(self) -> None:
        if self.prefix and self.access & {Access.LIST, Access.MANAGE}:
            raise ValueError(f"{self}: listing and managing are per bucket, not per prefix")


def grant(bucket: Bucket, *access: Access, prefix: str = "") -> Grant:
    return Grant(bucket, frozenset(access), prefix)


EVERYTHING = (Access.READ, Access.WRITE, Access.DELETE, Access.LIST, Access.MANAGE)

RIGHTS: dict[str, tuple[Grant, ...]] = {
    # Reads what clients uploaded (large photos travel as s3:// references to uploads/), stores
    # originals, and reads a stored original's metadata (a replay or a reused photo id).
    "ingest": (grant(Bucket.REGION, Access.READ, prefix="uploads/"),
               grant(Bucket.REGION, Access.READ, Access.WRITE, prefix="originals/")),
    "preprocess": (grant(Bucket.REGION, Access.READ, prefix="originals/"),),
    "featurize": (),  # Kafka in, Kafka out
    "reduce": (grant(Bucket.MODEL, Access.READ, Access.LIST),),
    "predict": (grant(Bucket.MODEL, Access.READ, Access.LIST),),
    # The lake (tables, checkpoints, training images) and the bundles it publishes.
    "spark": (
        grant(Bucket.LAKE, Access.READ, Access.WRITE, Access.DELETE, Access.LIST),
        grant(Bucket.MODEL, Access.READ, Access.WRITE, Access.LIST),
    ),
    # The HTTP gateway uploads users' large photos; `fruits users delete` erases as admin.
    "gateway": (grant(Bucket.REGION, Access.WRITE, prefix="uploads/"),),
    # A trusted backend uploading on behalf of users: it cannot read back, nor write outside uploads/.
    "client": (grant(Bucket.REGION, Access.WRITE, prefix="uploads/"),),
    # Provisioning and operators (`fruits train`, `fruits model`): every right on the app's buckets, no other bucket.
    "admin": tuple(grant(bucket, *EVERYTHING) for bucket in Bucket),
}  # fmt: skip
"""identity → its grants; an identity has no right it is not granted here."""

assert set(RIGHTS) == set(IDENTITIES), "every identity has its rights, and only those"


@dataclass(frozen=True)
class BucketNames:
    """The actual buckets of each kind (several of one kind when the local stack provisioned
    more than one set of settings, e.g. a test's own model bucket)."""

    model: tuple[str, ...]
    lake: tuple[str, ...]
    region: tuple[str, ...]

    @classmethod
    def of(cls, *settings: Settings) -> BucketNames:
        return cls(
            tuple(dict.fromkeys(s.model_bucket for s in settings)),
            tuple(dict.fromkeys(s.lake_bucket for s in settings)),
            tuple(dict.fromkeys(b for s in settings for b in s.region_buckets.values())),
        )

    def union(self, other: BucketNames) -> BucketNames:
        return BucketNames(
            *(tuple(dict.fromkeys((*mine, *theirs))) for mine, theirs in zip(self.kinds(), other.kinds()))
        )

    def kinds(self) -> tuple[tuple[str, ...], ...]:
        return self.model, self.lake, self.region

    def __getitem__(self, bucket: Bucket) -> tuple[str, ...]:
        return {Bucket.MODEL: self.model, Bucket.LAKE: self.lake, Bucket.REGION: self.region}[bucket]

    def to_json(self) -> dict[str, list[str]]:
        return {"model": list(self.model), "lake": list(self.lake), "region": list(self.region)}

    @classmethod
    def from_json(cls, data: Mapping[str, Iterable[str]]) -> BucketNames:
        return cls(tuple(data["model"]), tuple(data["lake"]), tuple(data["region"]))


# --- SeaweedFS (-s3.config identities) ----------------------------------------------------------

SEAWEEDFS_ACTION = {
    Access.READ: "Read",
    Access.WRITE: "Write",
    Access.DELETE: "Write",  # SeaweedFS checks deletes against Write
    Access.LIST: "List",
    Access.MANAGE: "Admin",  # scoped to the bucket: create it, configure it, and every object right in it
}


def seaweedfs_actions(identity: str, buckets: BucketNames) -> list[str]:
    """The identity's actions in SeaweedFS's identities file: ``Read:bucket`` for a whole bucket,
    ``Read:bucket/prefix*`` for keys under a prefix (SeaweedFS matches a trailing ``*`` as a
    prefix of ``bucket/key``)."""
    actions: dict[str, None] = {}
    for g in RIGHTS[identity]:
        for name in buckets[g.bucket]:
            resource = f"{name}/{g.prefix}*" if g.prefix else name
            for access in sorted(g.access, key=EVERYTHING.index):
                actions[f"{SEAWEEDFS_ACTION[access]}:{resource}"] = None
    return list(actions)


# --- AWS IAM -----------------------------------------------------------------------------------

IAM_OBJECT_ACTIONS = {
    Access.READ: ["s3:GetObject"],
    Access.WRITE: ["s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
    Access.DELETE: ["s3:DeleteObject"],
}
IAM_BUCKET_ACTIONS = {
    Access.LIST: ["s3:ListBucket", "s3:GetBucketLocation", "s3:ListBucketMultipartUploads"],
    Access.MANAGE: ["s3:CreateBucket", "s3:PutEncryptionConfiguration", "s3:GetEncryptionConfiguration"],
}
EXAMPLE_KMS_KEY_ARN = "arn:aws:kms:eu-west-1:111122223333:key/00000000-0000-0000-0000-000000000000"
"""Placeholder of the committed example policies: the key of FRUITS_S3_SSE_KMS_KEY_ID."""


def iam_policy(identity: str, buckets: BucketNames, kms_key_arn: str | None = None) -> dict[str, Any] | None:
    """The identity-based IAM policy of ``identity`` (None: it needs no S3 right). With a KMS key
    (SSE-KMS), reading needs kms:Decrypt, writing kms:GenerateDataKey (and kms:Decrypt, for
    multipart uploads) on that key."""
    statements: list[dict[str, Any]] = []

    def allow(sid: str, actions: list[str], resources: list[str] | str) -> None:
        statements.append({"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources})

    kms: set[str] = set()
    for g in RIGHTS[identity]:
        names, sid = buckets[g.bucket], f"{g.bucket.value.capitalize()}{g.prefix.strip('/').capitalize()}"
        if objects := _iam_actions(g, IAM_OBJECT_ACTIONS):
            allow(f"{sid}Objects", objects, [f"arn:aws:s3:::{name}/{g.prefix}*" for name in names])
        if bucket := _iam_actions(g, IAM_BUCKET_ACTIONS):
            allow(f"{sid}Bucket", bucket, [f"arn:aws:s3:::{name}" for name in names])
        kms |= {"kms:Decrypt"} if Access.READ in g.access else set()
        kms |= {"kms:GenerateDataKey", "kms:Decrypt"} if Access.WRITE in g.access else set()
    if not statements:
        return None
    if any(Access.MANAGE in g.access for g in RIGHTS[identity]):
        allow("ListAllBuckets", ["s3:ListAllMyBuckets"], "*")  # provisioning looks for the buckets to create
    if kms_key_arn and kms:
        allow("SseKmsKey", sorted(kms), kms_key_arn)
    return {"Version": "2012-10-17", "Statement": statements}


def _iam_actions(g: Grant, table: Mapping[Access, list[str]]) -> list[str]:
    return [action for access in EVERYTHING if access in g.access for action in table.get(access, [])]


def write_iam_policies(folder: Path, buckets: BucketNames, kms_key_arn: str | None) -> list[Path]:
    """One ``<identity>.json`` per identity that needs S3; returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for identity in IDENTITIES:
        if (policy := iam_policy(identity, buckets, kms_key_arn)) is not None:
            path = folder / f"{identity}.json"
            path.write_text(json.dumps(policy, indent=2) + "\n")
            written.append(path)
    return written


# --- Documentation -----------------------------------------------------------------------------

BUCKET_TITLE = {Bucket.MODEL: "model bucket", Bucket.LAKE: "lake bucket", Bucket.REGION: "each region bucket"}


def describe(identity: str, bucket: Bucket) -> str:
    """The identity's rights on one kind of bucket, for people: ``read `uploads/…`; write `originals/…```."""
    parts = []
    for g in RIGHTS[identity]:
        if g.bucket == bucket:
            access = ", ".join(a.value for a in EVERYTHING if a in g.access)
            parts.append(f"{access} `{g.prefix}…`" if g.prefix else access)
    return "; ".join(parts) or "—"


def markdown_table() -> str:
    """The README's identity → S3 rights table."""
    lines = ["| identity | " + " | ".join(BUCKET_TITLE[b] for b in Bucket) + " |", "|---" * (len(Bucket) + 1) + "|"]
    lines += [
        f"| `{identity}` | " + " | ".join(describe(identity, b) for b in Bucket) + " |" for identity in IDENTITIES
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = tool_parser("python -m tools.s3_rights", __doc__)
    parser.add_argument("--iam", type=Path, metavar="DIR", help="write one IAM policy per identity into DIR")
    parser.add_argument(
        "--kms-key-arn", default=None, help="ARN of the SSE-KMS key the policies allow (default: none, SSE-S3)"
    )
    args = parser.parse_args(argv)
    if args.iam is None:
        print(markdown_table())
        return 0
    for path in write_iam_policies(args.iam, BucketNames.of(Settings()), args.kms_key_arn):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`fruits users`: the gateway's users and their API tokens (``services.gateway.store``).
Deleting a user erases their token, their photo history and their stored photos (uploads and
originals, in every region bucket, as ``admin``: the gateway itself may not delete originals)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.s3 import s3_client
from core.settings import Settings
from services.gateway.store import Store, User
from services.ingest.transform import original_key


@dataclass(frozen=True)
class Deleted:
    user: User
    photos: int
    """Photos in their history."""
    objects: dict[str, int]
    """Bucket → objects deleted there."""


def delete_prefix(s3: Any, bucket: str, prefix: str) -> int:
    """Delete every object under ``prefix``; returns how many."""
    deleted = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
            deleted += len(keys)
    return deleted


def delete_user(settings: Settings, store: Store, name: str) -> Deleted | None:
    """Erase ``name`` (None: no such user). Their stored photos go first, so that a failure
    leaves the user in place to try again."""
    user = store.user(name)
    if user is None:
        return None
    s3 = s3_client(settings)
    objects: dict[str, int] = {}
    for bucket in dict.fromkeys(settings.region_buckets.values()):
        for prefix in (settings.upload_prefix.format(user_id=user.user_id), original_key(user.user_id, "")):
            objects[bucket] = objects.get(bucket, 0) + delete_prefix(s3, bucket, prefix)
    removed = store.delete_user(name)
    return Deleted(user, len(removed[1]) if removed else 0, objects)


def what_stays(settings: Settings, user_id: str) -> str:
    """What deleting a user does not erase, for the operator to act on."""
    hours = settings.topic_retention_hours
    return (
        f"What stays, keyed by user id {user_id}:\n"
        f"  - the lake (s3://{settings.lake_bucket}/{settings.lake_prefix}): the Spark job's Parquet rows of "
        f"their photos (features, reduced features, predictions, rejected records), until removed there;\n"
        f"  - Kafka: their records on the pipeline's topics and {settings.topic_feedback} until retention "
        f"({hours:g} h), on {settings.topic_dead_letter} for {settings.dead_letter_retention_hours:g} h."
    )

"""Provisioning: the pipeline's topics and buckets, on whatever servers the settings name
(the embedded local stack, docker-compose's, or a real cluster).

Topology is configuration: partitions, replication factor, ``min.insync.replicas`` and
retention come from ``FRUITS_TOPIC_*`` settings, the size limits from ``core.limits``.
The defaults are safe for a real cluster (3 replicas, 2 in sync); only the embedded
local stack, which starts its one broker itself, provisions with ``single_broker()``.
``plan_topics`` is the policy, a pure function (unit-tested without a broker); it
refuses a replication factor the cluster cannot hold, or one that leaves a cluster's
extra brokers unused unless FRUITS_TOPIC_ALLOW_UNDER_REPLICATED=true. Existing topics
are left as they are.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from core.kafka import client_config, metadata_problem
from core.limits import size_limits
from core.settings import Settings

HOUR_MS = 3600 * 1000
SAFE_REPLICATION_FACTOR = 3
"""Replicas a topic should have wherever the cluster has that many brokers."""
SINGLE_BROKER = {"topic_replication_factor": 1, "topic_min_insync_replicas": 1}
"""The topic settings of a one-broker cluster (the embedded local stack)."""


class ProvisionError(RuntimeError):
    """Topics or buckets could not be created; the message says why."""


class TopologyError(ProvisionError):
    """The topic settings do not suit the cluster (nothing was created)."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str]

    def new_topic(self) -> NewTopic:
        return NewTopic(
            self.name,
            num_partitions=self.partitions,
            replication_factor=self.replication_factor,
            config=self.config,
        )


def single_broker(settings: Settings) -> Settings:
    """``settings`` with the single-broker topology (replication 1, min ISR 1)."""
    return settings.model_copy(update=SINGLE_BROKER)


def check_topology(settings: Settings, broker_count: int) -> None:
    """Raise TopologyError unless the topic settings suit a cluster of ``broker_count`` brokers."""
    rf, min_isr = settings.topic_replication_factor, settings.topic_min_insync_replicas
    where = f"the Kafka cluster at {settings.kafka_bootstrap_servers}"
    if broker_count < 1:
        raise TopologyError(f"{where} reports no broker")
    if min_isr > rf:
        raise TopologyError(
            f"FRUITS_TOPIC_MIN_INSYNC_REPLICAS={min_isr} exceeds FRUITS_TOPIC_REPLICATION_FACTOR={rf}: "
            "no write could ever be acknowledged; set it to at most the replication factor"
        )
    if rf > broker_count:
        raise TopologyError(
            f"FRUITS_TOPIC_REPLICATION_FACTOR={rf}, but {where} has {broker_count} broker(s): a partition "
            f"cannot have more replicas than there are brokers; set it to at most {broker_count}"
        )
    safe = min(SAFE_REPLICATION_FACTOR, broker_count)
    if rf < safe and not settings.topic_allow_under_replicated:
        raise TopologyError(
            f"FRUITS_TOPIC_REPLICATION_FACTOR={rf} on {where}, which has {broker_count} brokers: the loss of "
            f"one broker would lose data or stop the pipeline; use {safe} (with "
            f"FRUITS_TOPIC_MIN_INSYNC_REPLICAS={safe - 1 or 1}), or set FRUITS_TOPIC_ALLOW_UNDER_REPLICATED=true"
        )


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic as the settings describe it: the data topics, the feedback topic, then the dead-letter topic."""
    limits = size_limits(settings)

    def spec(name: str, retention_hours: float, max_bytes: int) -> TopicSpec:
        return TopicSpec(name, settings.topic_partitions, settings.topic_replication_factor, {
            "min.insync.replicas": str(settings.topic_min_insync_replicas),
            "retention.ms": str(round(retention_hours * HOUR_MS)),
            "max.message.bytes": str(max_bytes),
        })  # fmt: skip

    return [
        *(spec(name, settings.topic_retention_hours, limits.record_bytes) for name in settings.data_topics()),
        spec(settings.topic_feedback, settings.topic_retention_hours, limits.record_bytes),
        spec(settings.topic_dead_letter, settings.dead_letter_retention_hours, limits.dead_letter_bytes),
    ]


def plan_topics(settings: Settings, broker_count: int, existing: Collection[str] = ()) -> list[TopicSpec]:
    """The topics to create on a cluster of ``broker_count`` brokers that already has
    ``existing``; raises TopologyError when the settings do not suit the cluster (only
    when something is to be created: existing topics are not reconfigured)."""
    missing = [spec for spec in topic_specs(settings) if spec.name not in existing]
    if missing:
        check_topology(settings, broker_count)
    return missing


def ensure_topics(settings: Settings) -> list[str]:
    """Create the pipeline's topics that are missing; return the names created."""
    admin = AdminClient(client_config(settings))
    try:
        metadata = admin.list_topics(timeout=10)
    except KafkaException as exc:
        raise ProvisionError(f"cannot reach Kafka at {settings.kafka_bootstrap_servers}: {exc}") from exc
    new = plan_topics(settings, len(metadata.brokers), metadata.topics)
    if not new:
        return []
    for name, future in admin.create_topics([spec.new_topic() for spec in new], operation_timeout=30).items():
        try:
            future.result()
        except KafkaException as exc:  # another provisioning may have won the race
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise ProvisionError(f"cannot create topic {name}: {exc}") from exc
    return [spec.name for spec in new]


def s3_admin_client(settings: Settings) -> Any:
    """An S3 client that gives up quickly: for checks and provisioning, not for data."""
    config = Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 2, "mode": "standard"})
    return boto3.client("s3", config=config, **settings.s3_client_kwargs())


def ensure_buckets(settings: Settings) -> list[str]:
    """Create the model, region and lake buckets that are missing, each encrypting what it
    stores by default as FRUITS_S3_SSE says (for writers that do not ask: pyarrow, aws s3 cp);
    return the names created."""
    s3 = s3_admin_client(settings)
    existing = {bucket["Name"] for bucket in s3.list_buckets()["Buckets"]}
    wanted = dict.fromkeys([settings.model_bucket, *settings.region_buckets.values(), settings.lake_bucket])
    missing = [bucket for bucket in wanted if bucket not in existing]
    # AWS refuses an explicit us-east-1 location but requires every other one.
    location = {} if settings.s3_region == "us-east-1" else {"LocationConstraint": settings.s3_region}
    for bucket in missing:
        try:
            s3.create_bucket(Bucket=bucket, **({"CreateBucketConfiguration": location} if location else {}))
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "BucketAlreadyOwnedByYou":
                raise ProvisionError(f"cannot create bucket {bucket}: {exc}") from exc
        if encryption := default_encryption(settings):
            s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=encryption)
    return missing


def default_encryption(settings: Settings) -> dict[str, Any] | None:
    """A bucket's default encryption under FRUITS_S3_SSE (None when it is empty)."""
    if not settings.s3_sse:
        return None
    default = {"SSEAlgorithm": settings.s3_sse}
    if settings.s3_sse == "aws:kms" and settings.s3_sse_kms_key_id:
        default["KMSMasterKeyID"] = settings.s3_sse_kms_key_id
    return {"Rules": [{"ApplyServerSideEncryptionByDefault": default}]}


# --- Readiness of the configured servers (None once they answer, else why not) ---------------


def kafka_problem(settings: Settings) -> str | None:
    # librdkafka would log every refused connection while a broker boots; the error is returned instead.
    error = metadata_problem(settings, timeout=2)
    return None if error is None else error.str()


def s3_problem(settings: Settings) -> str | None:
    try:
        s3_admin_client(settings).list_buckets()
    except (BotoCoreError, ClientError) as exc:
        return str(exc)
    return None

"""The local stack: provisioned topics and buckets, exactly-once Kafka, authenticated S3
(what each identity may do there: test_s3_security.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from core.kafka import client_config
from core.limits import size_limits
from core.settings import PROJECT_ROOT, Settings
from tools.provision import HOUR_MS, TopologyError, ensure_buckets, ensure_topics
from tools.stack import kafka_server
from tools.stack.supervisor import our_pid

pytestmark = pytest.mark.integration


def _topics(settings: Settings) -> list[str]:
    return [*settings.data_topics(), settings.topic_feedback, settings.topic_dead_letter]


def _s3(settings: Settings, **override: str) -> Any:
    """A client of the admin identity (the one that provisions), with ``override``s."""
    return boto3.client("s3", **{**settings.acting_as("admin").s3_client_kwargs(), **override})


def test_topics_have_their_partitions_and_configs(stack: Settings) -> None:
    admin = AdminClient(client_config(stack))
    metadata = admin.list_topics(timeout=10).topics
    limits = size_limits(stack)
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in _topics(stack)]
    for resource, future in admin.describe_configs(resources).items():
        name, config = resource.name, future.result(timeout=10)
        partitions = metadata[name].partitions.values()
        assert len(partitions) == stack.topic_partitions, name
        assert {len(partition.replicas) for partition in partitions} == {stack.topic_replication_factor}, name
        assert config["min.insync.replicas"].value == str(stack.topic_min_insync_replicas), name
        dead_letters = name == stack.topic_dead_letter
        expected_bytes = limits.dead_letter_bytes if dead_letters else limits.record_bytes
        assert int(config["max.message.bytes"].value) == expected_bytes, name
        retention_hours = stack.dead_letter_retention_hours if dead_letters else stack.topic_retention_hours
        assert int(config["retention.ms"].value) == retention_hours * HOUR_MS, name


def test_the_stack_own_broker_gets_single_broker_topics(stack: Settings) -> None:
    if our_pid(stack, kafka_server.NAME) is None:
        pytest.skip("an existing cluster: its topics get the configured topology")
    assert (stack.topic_replication_factor, stack.topic_min_insync_replicas) == (1, 1)


def test_the_broker_takes_a_dead_letter_of_the_largest_record(stack: Settings) -> None:
    admin = AdminClient(client_config(stack))
    broker_id = next(iter(admin.list_topics(timeout=10).brokers))
    resource = ConfigResource(ResourceType.BROKER, str(broker_id))
    config = admin.describe_configs([resource])[resource].result(timeout=10)
    assert int(config["message.max.bytes"].value) >= size_limits(stack).dead_letter_bytes


def test_topics_that_the_cluster_cannot_replicate_are_refused(stack: Settings) -> None:
    brokers = len(AdminClient(client_config(stack)).list_topics(timeout=10).brokers)
    too_many = stack.model_copy(update={
        "topic_replication_factor": brokers + 1,
        "topic_photos": f"test.stack.refused.{uuid.uuid4().hex[:8]}",
    })  # fmt: skip
    with pytest.raises(TopologyError, match="FRUITS_TOPIC_REPLICATION_FACTOR"):
        ensure_topics(too_many)
    assert too_many.topic_photos not in AdminClient(client_config(stack)).list_topics(
        timeout=10
    ).topics


def test_provisioning_is_idempotent(stack: Settings) -> None:
    assert ensure_topics(stack) == []
    assert ensure_buckets(stack.acting_as("admin")) == []


def test_read_committed_consumer_sees_only_committed_transactions(stack: Settings) -> None:
    # A topic of its own, so no pipeline stage ever reads these records.
    topic = f"test.stack.{uuid.uuid4().hex[:8]}"
    admin = AdminClient(client_config(stack))
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(timeout=30)
    try:
        producer = Producer(client_config(stack, **{
            "transactional.id": f"test-stack-{uuid.uuid4()}",
            "message.max.bytes": size_limits(stack).record_bytes,
        }))  # fmt: skip
        producer.init_transactions(30)
        producer.begin_transaction()
        producer.produce(topic, key=b"k", value=b"aborted")
        producer.flush(30)  # written to the log, then aborted
        producer.abort_transaction(30)
        photo = os.urandom(1024 * 1024 + 4096)  # an inline photo over 1 MiB fits the broker's limit
        producer.begin_transaction()
        producer.produce(topic, key=b"k", value=b"committed")
        producer.produce(topic, key=b"k", value=photo)
        producer.commit_transaction(30)

        consumer = Consumer(client_config(stack, **{
            "group.id": f"test-stack-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }))  # fmt: skip
        consumer.subscribe([topic])
        values: list[bytes | None] = []
        deadline = time.monotonic() + 30
        try:
            while len(values) < 2 and time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is not None:
                    assert msg.error() is None, msg.error()
                    values.append(msg.value())
        finally:
            consumer.close()
        assert values == [b"committed", photo]
    finally:
        admin.delete_topics([topic])[topic].result(timeout=30)


def test_buckets_exist(stack: Settings) -> None:
    names = {bucket["Name"] for bucket in _s3(stack).list_buckets()["Buckets"]}
    assert {stack.model_bucket, stack.lake_bucket, *stack.region_buckets.values()} <= names


def test_s3_put_and_get_with_the_right_keys(stack: Settings) -> None:
    s3 = _s3(stack)
    key = f"test/stack/{uuid.uuid4()}"
    body = os.urandom(100_000)
    s3.put_object(Bucket=stack.lake_bucket, Key=key, Body=body)
    try:
        assert s3.get_object(Bucket=stack.lake_bucket, Key=key)["Body"].read() == body
    finally:
        s3.delete_object(Bucket=stack.lake_bucket, Key=key)


@pytest.mark.parametrize(
    "override",
    [{"aws_secret_access_key": "not-the-secret"}, {"aws_access_key_id": "intruder"}],
    ids=["wrong-secret", "unknown-key"],
)
def test_s3_refuses_wrong_credentials(stack: Settings, override: dict[str, str]) -> None:
    s3 = _s3(stack, **override)
    with pytest.raises(ClientError) as refused:
        s3.put_object(Bucket=stack.lake_bucket, Key="test/stack/intruder", Body=b"x")
    assert refused.value.response["Error"]["Code"] in {"SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied"}
    with pytest.raises(ClientError):
        s3.list_buckets()


def test_status_shows_the_running_servers(stack: Settings) -> None:
    status = subprocess.run(
        [sys.executable, "-m", "tools.stack", "status"],
        capture_output=True,
        text=True,
        check=True,
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
    ).stdout
    assert str(stack.state_dir) in status
    assert "not running" not in status


def _stack_command(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.stack", *args],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **env},
        timeout=120,
        check=False,
    )


def test_provision_creates_only_what_is_missing_and_starts_nothing(stack: Settings) -> None:
    provisioned = _stack_command("provision")
    assert provisioned.returncode == 0, provisioned.stderr
    assert "topics created: none (all exist)" in provisioned.stdout
    assert "buckets created: none (all exist)" in provisioned.stdout
    assert "starting" not in provisioned.stdout


def test_provision_refuses_a_topology_the_cluster_cannot_hold(stack: Settings) -> None:
    topic = f"test.stack.refused.{uuid.uuid4().hex[:8]}"
    refused = _stack_command("provision", FRUITS_TOPIC_PHOTOS=topic, FRUITS_TOPIC_REPLICATION_FACTOR="9")
    assert refused.returncode == 1
    assert "FRUITS_TOPIC_REPLICATION_FACTOR=9" in refused.stderr and "broker" in refused.stderr
    admin = AdminClient(client_config(stack))
    assert topic not in admin.list_topics(timeout=10).topics

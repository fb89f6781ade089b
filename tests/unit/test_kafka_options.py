"""FRUITS_KAFKA_*_OPTIONS: librdkafka properties over the defaults, never over what a client's role needs."""

from core.kafka import consumer_config, producer_config
from core.settings import Settings


def test_producer_options_override_the_defaults_but_not_the_role(monkeypatch):
    monkeypatch.setenv("FRUITS_KAFKA_PRODUCER_OPTIONS", '{"linger.ms": "20", "transactional.id": "evil"}')
    monkeypatch.setenv("FRUITS_KAFKA_COMPRESSION", "lz4")
    config = producer_config(Settings(kafka_security_protocol="PLAINTEXT"), **{"transactional.id": "fruits-ingest-0"})
    assert config["linger.ms"] == "20"
    assert config["compression.type"] == "lz4"
    assert config["transactional.id"] == "fruits-ingest-0"


def test_consumer_options_never_change_the_group_commits_or_isolation(monkeypatch):
    monkeypatch.setenv(
        "FRUITS_KAFKA_CONSUMER_OPTIONS",
        '{"fetch.wait.max.ms": "10", "group.id": "x", "enable.auto.commit": "true", "isolation.level": "read_uncommitted"}',
    )
    config = consumer_config(Settings(kafka_security_protocol="PLAINTEXT"), group_id="fruits-reduce")
    assert config["fetch.wait.max.ms"] == "10"
    assert (config["group.id"], config["enable.auto.commit"], config["isolation.level"]) == (
        "fruits-reduce",
        False,
        "read_committed",
    )


def test_without_options_the_defaults_stand():
    config = producer_config(Settings(kafka_security_protocol="PLAINTEXT"))
    assert config["linger.ms"] == 2 and config["compression.type"] == "none" and config["retry.backoff.ms"] == 10

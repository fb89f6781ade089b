"""The topology policy (tools.provision.plan_topics): which topics are created, with what,
and which settings are refused for which cluster, decided without a broker."""

from __future__ import annotations

import os

import pytest

from core.limits import size_limits
from core.settings import Settings
from tools.provision import HOUR_MS, TopologyError, plan_topics, single_broker, topic_specs


@pytest.fixture(autouse=True)
def no_fruits_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The defaults, whatever the shell (or an integration session fixture) exported."""
    for name in [name for name in os.environ if name.startswith("FRUITS_")]:
        monkeypatch.delenv(name)


def topology(**fields: object) -> Settings:
    return Settings(**fields)  # type: ignore[arg-type]


def test_defaults_are_safe_for_a_real_cluster() -> None:
    settings = topology()
    specs = plan_topics(settings, broker_count=3)
    assert [spec.name for spec in specs] == [*settings.data_topics(), settings.topic_feedback, settings.topic_dead_letter]
    for spec in specs:
        assert spec.partitions == 3
        assert spec.replication_factor == 3
        assert spec.config["min.insync.replicas"] == "2"


def test_sizes_and_retention_come_from_the_settings_and_the_limits() -> None:
    settings = topology(max_record_bytes=1024 * 1024, topic_retention_hours=12, dead_letter_retention_hours=48)
    limits = size_limits(settings)
    *data, dead_letter = topic_specs(settings)
    for spec in data:
        assert spec.config["max.message.bytes"] == str(limits.record_bytes) == str(1024 * 1024)
        assert spec.config["retention.ms"] == str(12 * HOUR_MS)
    assert dead_letter.name == settings.topic_dead_letter
    assert dead_letter.config["max.message.bytes"] == str(limits.dead_letter_bytes) == str(2 * 1024 * 1024)
    assert dead_letter.config["retention.ms"] == str(48 * HOUR_MS)


def test_default_retention_is_a_week_for_data_and_30_days_for_dead_letters() -> None:
    *data, dead_letter = topic_specs(topology())
    assert {spec.config["retention.ms"] for spec in data} == {str(7 * 24 * HOUR_MS)}
    assert dead_letter.config["retention.ms"] == str(30 * 24 * HOUR_MS)


def test_partitions_come_from_the_settings() -> None:
    assert {spec.partitions for spec in plan_topics(topology(topic_partitions=12), broker_count=3)} == {12}


def test_only_missing_topics_are_planned() -> None:
    settings = topology()
    existing = {settings.topic_photos, settings.topic_dead_letter}
    planned = [spec.name for spec in plan_topics(settings, broker_count=3, existing=existing)]
    assert planned == [*settings.data_topics()[1:], settings.topic_feedback]


def test_nothing_to_create_is_never_refused() -> None:
    # e.g. the demo re-checking topics that `make up` created with single-broker values
    everything = [spec.name for spec in topic_specs(topology())]
    assert plan_topics(topology(), broker_count=1, existing=everything) == []


def test_the_single_broker_topology_is_one_replica_one_in_sync() -> None:
    specs = plan_topics(single_broker(topology()), broker_count=1)
    assert {(spec.replication_factor, spec.config["min.insync.replicas"]) for spec in specs} == {(1, "1")}


def test_more_replicas_than_brokers_is_refused() -> None:
    with pytest.raises(TopologyError, match=r"FRUITS_TOPIC_REPLICATION_FACTOR=3.*1 broker.*at most 1"):
        plan_topics(topology(), broker_count=1)


@pytest.mark.parametrize(("replication", "brokers"), [(1, 2), (1, 3), (2, 3), (2, 6), (1, 6)])
def test_under_replication_on_a_bigger_cluster_is_refused(replication: int, brokers: int) -> None:
    settings = topology(topic_replication_factor=replication, topic_min_insync_replicas=1)
    with pytest.raises(TopologyError, match="FRUITS_TOPIC_ALLOW_UNDER_REPLICATED"):
        plan_topics(settings, broker_count=brokers)


@pytest.mark.parametrize(("replication", "brokers"), [(1, 1), (2, 2), (3, 3), (3, 5), (4, 5)])
def test_full_replication_is_accepted(replication: int, brokers: int) -> None:
    settings = topology(topic_replication_factor=replication, topic_min_insync_replicas=1)
    assert {spec.replication_factor for spec in plan_topics(settings, broker_count=brokers)} == {replication}


def test_under_replication_is_accepted_when_asked_for() -> None:
    settings = topology(topic_replication_factor=1, topic_min_insync_replicas=1, topic_allow_under_replicated=True)
    assert {spec.replication_factor for spec in plan_topics(settings, broker_count=3)} == {1}


def test_asking_does_not_allow_more_replicas_than_brokers() -> None:
    settings = topology(topic_replication_factor=4, topic_allow_under_replicated=True)
    with pytest.raises(TopologyError, match="at most 3"):
        plan_topics(settings, broker_count=3)


def test_min_insync_replicas_above_the_replication_factor_is_refused() -> None:
    settings = topology(topic_replication_factor=1, topic_min_insync_replicas=2)
    with pytest.raises(TopologyError, match="FRUITS_TOPIC_MIN_INSYNC_REPLICAS=2 exceeds"):
        plan_topics(settings, broker_count=1)


def test_min_insync_replicas_equal_to_the_replication_factor_is_accepted() -> None:
    settings = topology(topic_replication_factor=3, topic_min_insync_replicas=3)
    assert {spec.config["min.insync.replicas"] for spec in plan_topics(settings, broker_count=3)} == {"3"}


def test_a_cluster_without_brokers_is_refused() -> None:
    with pytest.raises(TopologyError, match="no broker"):
        plan_topics(single_broker(topology()), broker_count=0)


def test_new_topics_carry_the_spec() -> None:
    spec = plan_topics(topology(), broker_count=3)[0]
    new = spec.new_topic()
    assert (new.topic, new.num_partitions, new.replication_factor) == (spec.name, 3, 3)
    assert new.config == spec.config

"""Kafka security without a broker: each identity's client options (librdkafka and Spark's
Java client), the ACL table (tools.kafka_acls) against what the code reads and writes, and
the broker's server.properties."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import pytest
from confluent_kafka.admin import AclBinding, AclOperation, AclPermissionType, ResourcePatternType, ResourceType
from pydantic import SecretStr

from core.kafka import client_config, stage_group_id, stage_transactional_id
from core.settings import IDENTITIES, PIPELINE_SERVICES, MissingCredentials, Settings, jaas_config
from spark.session import kafka_options
from tools.client import READER_GROUP_PREFIX
from tools.kafka_acls import ADMIN, bindings, lake_topics, rights, stale
from tools.stack.kafka_server import BrokerSecurity, properties

READ, WRITE = AclOperation.READ, AclOperation.WRITE
TOPIC, GROUP, TRANSACTIONAL_ID = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.TRANSACTIONAL_ID


@pytest.fixture(autouse=True)
def no_fruits_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The defaults, whatever the shell (or an integration session fixture) exported."""
    for name in [name for name in os.environ if name.startswith("FRUITS_")]:
        monkeypatch.delenv(name)


@pytest.fixture
def local_stack(tmp_path: Path) -> Settings:
    """Settings of a state dir with the local stack's secrets and CA (contents made up)."""
    (tmp_path / "secrets").mkdir()
    for identity in IDENTITIES:
        (tmp_path / "secrets" / f"{identity}.json").write_text(json.dumps({"kafka_password": f"pw-of-{identity}"}))
    (tmp_path / "tls").mkdir()
    (tmp_path / "tls" / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    return Settings(state_dir=tmp_path)


# --- Client options --------------------------------------------------------------------------


def test_by_default_an_identity_logs_in_with_scram_over_tls_with_its_local_secret(local_stack: Settings) -> None:
    config = local_stack.acting_as("reduce").kafka_security_config()
    assert config == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "reduce",
        "sasl.password": "pw-of-reduce",
        "ssl.ca.location": str(local_stack.state_dir / "tls" / "ca.pem"),
    }
    assert client_config(local_stack.acting_as("reduce"))["sasl.password"] == "pw-of-reduce"


def test_fruits_identity_wins_over_the_entry_point_default(local_stack: Settings) -> None:
    chosen = local_stack.model_copy(update={"identity": "admin"})
    assert chosen.acting_as("client").kafka_security_config()["sasl.username"] == "admin"


def test_given_credentials_and_no_local_ca_are_a_managed_cluster(tmp_path: Path) -> None:
    msk = Settings(
        state_dir=tmp_path, identity="ingest", kafka_username="fruits-ingest", kafka_password=SecretStr("s3cret")
    )
    config = msk.kafka_security_config()
    assert (config["sasl.username"], config["sasl.password"]) == ("fruits-ingest", "s3cret")
    assert "ssl.ca.location" not in config  # the system's CAs
    cloud = msk.model_copy(update={"kafka_sasl_mechanism": "PLAIN"})
    assert cloud.kafka_security_config()["sasl.mechanism"] == "PLAIN"


def test_no_credentials_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MissingCredentials, match="FRUITS_KAFKA_USERNAME"):
        Settings(state_dir=tmp_path, identity="client").kafka_security_config()
    with pytest.raises(MissingCredentials, match="none"):
        Settings(state_dir=tmp_path).kafka_security_config()


def test_plaintext_is_an_explicit_opt_in_without_credentials(tmp_path: Path) -> None:
    assert Settings(state_dir=tmp_path, kafka_security_protocol="PLAINTEXT").kafka_security_config() == {
        "security.protocol": "PLAINTEXT"
    }


def test_spark_gets_the_same_login_in_java_terms(local_stack: Settings) -> None:
    options = kafka_options(local_stack.acting_as("spark"))
    assert options["kafka.security.protocol"] == "SASL_SSL"
    assert options["kafka.sasl.mechanism"] == "SCRAM-SHA-512"
    assert options["kafka.sasl.jaas.config"] == (
        'org.apache.kafka.common.security.scram.ScramLoginModule required username="spark" password="pw-of-spark";'
    )
    assert (options["kafka.ssl.truststore.type"], options["kafka.ssl.truststore.location"]) == (
        "PEM",
        str(local_stack.local_ca),
    )
    plain = kafka_options(local_stack.model_copy(update={"kafka_security_protocol": "PLAINTEXT"}))
    assert not any(key.startswith(("kafka.sasl", "kafka.ssl")) for key in plain)


def test_jaas_values_are_quoted() -> None:
    assert jaas_config("PLAIN", "k", 'a"b\\c') == (
        'org.apache.kafka.common.security.plain.PlainLoginModule required username="k" password="a\\"b\\\\c";'
    )
    with pytest.raises(ValueError, match="GSSAPI"):
        jaas_config("GSSAPI", "u", "p")


# --- The ACL table -------------------------------------------------------------------------


def granted(settings: Settings, principal: str, operation: AclOperation, resource: ResourceType) -> set[str]:
    return {
        grant.name + ("*" if grant.prefixed else "")
        for grant in rights(settings)[principal]
        if grant.operation == operation and grant.resource == resource
    }


def build_stage(service: str, settings: Settings):
    return importlib.import_module(f"services.{service}.__main__").build_stage(settings)


@pytest.mark.parametrize("service", PIPELINE_SERVICES)
def test_each_service_reads_its_input_and_writes_only_its_output_and_dead_letters(service: str) -> None:
    settings = Settings(metrics_enabled=False, identity=service)
    stage = build_stage(service, settings)  # what the service's code reads and writes
    assert granted(settings, service, READ, TOPIC) == {stage.input_topic}
    assert granted(settings, service, WRITE, TOPIC) == {stage.output_topic, settings.topic_dead_letter}
    assert granted(settings, service, READ, GROUP) == {stage_group_id(service)}
    (prefix,) = granted(settings, service, WRITE, TRANSACTIONAL_ID)
    assert stage_transactional_id(service, settings.instance_id).startswith(prefix.rstrip("*"))
    assert not stage_transactional_id(next(s for s in PIPELINE_SERVICES if s != service), "0").startswith(
        prefix.rstrip("*")
    )
    assert {grant.operation for grant in rights(settings)[service]} == {READ, WRITE}


def test_spark_only_reads_the_topics_of_the_streaming_job() -> None:
    from spark.session import KAFKA_GROUP_ID_PREFIX
    from spark.streaming_job import tables

    settings = Settings()
    assert set(lake_topics(settings)) == {table.topic for table in tables(settings)}
    assert granted(settings, "spark", READ, TOPIC) == set(lake_topics(settings))
    assert granted(settings, "spark", READ, GROUP) == {f"{KAFKA_GROUP_ID_PREFIX}-*"}
    assert {grant.operation for grant in rights(settings)["spark"]} == {READ}


def test_the_client_writes_photos_and_reads_predictions_only() -> None:
    settings = Settings()
    assert granted(settings, "client", WRITE, TOPIC) == {settings.topic_photos}
    assert granted(settings, "client", READ, TOPIC) == {settings.topic_predictions}
    assert granted(settings, "client", READ, GROUP) == {f"{READER_GROUP_PREFIX}*"}


def test_the_gateway_writes_photos_and_feedback_and_reads_predictions_in_its_own_groups() -> None:
    from services.gateway.predictions import GATEWAY_GROUP_PREFIX, gateway_group_id

    settings = Settings()
    assert granted(settings, "gateway", WRITE, TOPIC) == {settings.topic_photos, settings.topic_feedback}
    assert granted(settings, "gateway", READ, TOPIC) == {settings.topic_predictions}
    assert granted(settings, "gateway", READ, GROUP) == {f"{GATEWAY_GROUP_PREFIX}*"}
    assert gateway_group_id().startswith(GATEWAY_GROUP_PREFIX) and gateway_group_id() != gateway_group_id()


def test_only_admin_reads_the_dead_letters_and_every_identity_has_its_place() -> None:
    settings = Settings()
    table = rights(settings)
    assert set(table) == set(IDENTITIES) - {ADMIN}
    assert not [who for who in table if settings.topic_dead_letter in granted(settings, who, READ, TOPIC)]


def test_the_bindings_follow_the_topic_settings_and_allow_only() -> None:
    settings = Settings(topic_features="other.features")
    acls = bindings(settings)
    assert len(acls) == len(set(acls)) == sum(len(grants) for grants in rights(settings).values())
    assert {acl.permission_type for acl in acls} == {AclPermissionType.ALLOW}
    assert {acl.host for acl in acls} == {"*"}
    features = [acl for acl in acls if acl.name == "other.features"]
    assert {(acl.principal, acl.operation) for acl in features} == {
        ("User:featurize", WRITE),
        ("User:reduce", READ),
        ("User:spark", READ),
    }
    assert {acl.resource_pattern_type for acl in acls if acl.restype == TOPIC} == {ResourcePatternType.LITERAL}


# --- The broker ------------------------------------------------------------------------------


def test_plaintext_broker_has_no_login_and_no_authorizer(tmp_path: Path) -> None:
    text = properties(Settings(), 19092, tmp_path)
    assert "listener.security.protocol.map=BROKER:PLAINTEXT,CONTROLLER:PLAINTEXT" in text
    assert "sasl" not in text and "authorizer" not in text


def test_secured_broker_authenticates_everyone_and_denies_by_default(tmp_path: Path) -> None:
    security = BrokerSecurity("SASL_SSL", "SCRAM-SHA-512", "pw", tmp_path / "ks.pem", tmp_path / "ca.pem")
    lines = set(properties(Settings(), 19092, tmp_path / "data", security).splitlines())
    assert {
        "listener.security.protocol.map=BROKER:SASL_SSL,CONTROLLER:SASL_SSL",
        "listener.name.broker.sasl.enabled.mechanisms=SCRAM-SHA-512",
        "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
        "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
        "sasl.mechanism.controller.protocol=PLAIN",
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users=User:admin",
        "allow.everyone.if.no.acl.found=false",
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={tmp_path / 'ks.pem'}",
        f"ssl.truststore.location={tmp_path / 'ca.pem'}",
    } <= lines
    jaas = next(line for line in lines if line.startswith("listener.name.broker.scram-sha-512.sasl.jaas.config="))
    assert 'username="admin" password="pw"' in jaas


def allow(
    principal: str,
    resource: ResourceType,
    name: str,
    operation: AclOperation = AclOperation.READ,
    permission: AclPermissionType = AclPermissionType.ALLOW,
) -> AclBinding:
    return AclBinding(resource, name, ResourcePatternType.LITERAL, f"User:{principal}", "*", operation, permission)


def test_a_right_the_table_no_longer_gives_is_stale_and_nothing_else_is() -> None:
    settings = Settings(kafka_security_protocol="PLAINTEXT")
    wanted = set(bindings(settings))
    topic, group = ResourceType.TOPIC, ResourceType.GROUP
    # An older release's rights of our principals: removed.
    assert stale(allow("client", topic, settings.topic_dead_letter), settings, wanted)
    assert stale(allow("predict", topic, settings.topic_photos, AclOperation.WRITE), settings, wanted)
    assert stale(allow("gateway", group, "fruits-old-group"), settings, wanted)
    # What the table gives, an operator's DENY, another principal's right, another deployment's topic: kept.
    assert not any(stale(binding, settings, wanted) for binding in wanted)
    deny = allow("client", topic, settings.topic_dead_letter, permission=AclPermissionType.DENY)
    assert not stale(deny, settings, wanted)
    assert not stale(allow("auditor", topic, settings.topic_dead_letter), settings, wanted)
    assert not stale(allow("client", topic, "other-app.photos"), settings, wanted)

"""Kafka security of the local stack, on by default: TLS with the stack's CA, SCRAM logins,
and ACLs that give each principal its own rights only (tools.kafka_acls). Each refusal is
checked beside the same request of a principal that may make it, so that a test fails
when the right is missing as well as when the wrong is allowed."""

from __future__ import annotations

import json
import stat
import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)
from pydantic import SecretStr

from core.kafka import (
    check_reachable,
    client_config,
    consumer_config,
    metadata_problem,
    producer_config,
    stage_transactional_id,
)
from core.settings import IDENTITIES, Settings
from tests.integration import as_identity
from tools.client import PredictionReader
from tools.kafka_acls import ADMIN, ensure_acls, secured
from tools.provision import ensure_topics, kafka_problem, single_broker
from tools.stack import kafka_server
from tools.stack.supervisor import StackError, free_port_block, our_pid, stop, wait_ready
from tools.stack.tls import ensure_server_tls

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def settings(stack: Settings) -> Settings:
    """Topics of this module alone (junk written here reaches no service), with their ACLs; as admin."""
    if not secured(stack):
        pytest.skip(f"Kafka runs {stack.kafka_security_protocol}: no logins, no ACLs")
    run = uuid.uuid4().hex[:6]
    topics = ("photos", "ingested", "preprocessed", "features", "reduced", "predictions", "dead_letter")
    settings = stack.model_copy(update={f"topic_{name}": f"sectest-{run}.{name}" for name in topics})
    ensure_topics(settings)
    ensure_acls(settings)
    return settings


def produce(settings: Settings, identity: str, topic: str) -> KafkaError | None:
    """Produce one record to ``topic`` as ``identity``; its delivery error, if any."""
    errors: list[KafkaError | None] = []
    producer = Producer(producer_config(as_identity(settings, identity)))
    producer.produce(topic, key=b"security-test", value=b"x", on_delivery=lambda error, msg: errors.append(error))
    assert producer.flush(30) == 0, "not delivered nor refused within 30 s"
    return errors[0]


def code(error: KafkaError | None) -> int | None:
    return None if error is None else error.code()


# --- Logins and TLS ------------------------------------------------------------------------


def test_a_principal_logs_in_with_its_own_password(settings: Settings) -> None:
    check_reachable(as_identity(settings, "client"), timeout=10)


@pytest.mark.parametrize(
    "override",
    [{"kafka_password": SecretStr("not-the-password")}, {"kafka_username": "intruder"}],
    ids=["wrong-password", "unknown-user"],
)
def test_a_wrong_login_is_refused_with_a_clear_error(settings: Settings, override: dict) -> None:
    intruder = as_identity(settings, "client").model_copy(update=override)
    assert code(metadata_problem(intruder, timeout=5)) == KafkaError._AUTHENTICATION
    with pytest.raises(ConnectionError, match="refused the login of"):
        check_reachable(intruder, timeout=5)


def test_plaintext_does_not_reach_the_sasl_ssl_port(settings: Settings) -> None:
    plaintext = as_identity(settings, ADMIN).model_copy(update={"kafka_security_protocol": "PLAINTEXT"})
    assert metadata_problem(plaintext, timeout=5) is not None
    assert metadata_problem(as_identity(settings, ADMIN), timeout=5) is None


def test_a_client_that_does_not_trust_the_stack_ca_is_refused(settings: Settings, tmp_path) -> None:
    other_ca = ensure_server_tls(Settings(state_dir=tmp_path)).ca  # a CA that never signed the broker
    distrustful = as_identity(settings, "client").model_copy(update={"kafka_ssl_ca_location": str(other_ca)})
    assert code(metadata_problem(distrustful, timeout=5)) == KafkaError._SSL


# --- ACLs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("identity", "topic", "allowed"),
    [
        ("ingest", "topic_ingested", True),
        ("ingest", "topic_dead_letter", True),
        ("ingest", "topic_features", False),  # featurize's output
        ("ingest", "topic_photos", False),  # its own input
        ("featurize", "topic_features", True),
        ("featurize", "topic_predictions", False),
        ("gateway", "topic_photos", True),
        ("gateway", "topic_feedback", True),
        ("gateway", "topic_predictions", False),
        ("gateway", "topic_dead_letter", False),
        ("client", "topic_photos", True),
        ("client", "topic_feedback", False),  # the gateway's
        ("client", "topic_predictions", False),
        ("client", "topic_dead_letter", False),
        ("spark", "topic_features", False),  # reads only
    ],
)
def test_each_principal_writes_only_its_own_topics(settings: Settings, identity: str, topic: str, allowed: bool):
    error = produce(settings, identity, getattr(settings, topic))
    assert code(error) == (None if allowed else KafkaError.TOPIC_AUTHORIZATION_FAILED), error


def test_the_client_reads_predictions_but_not_the_dead_letters(settings: Settings) -> None:
    client = as_identity(settings, "client")
    PredictionReader(client).close()
    with pytest.raises(RuntimeError, match="TOPIC_AUTHORIZATION_FAILED"):
        PredictionReader(client, topic=settings.topic_dead_letter)
    PredictionReader(as_identity(settings, ADMIN), topic=settings.topic_dead_letter).close()  # operators may


def reads_dead_letters(settings: Settings) -> bool:
    try:
        PredictionReader(as_identity(settings, "client"), topic=settings.topic_dead_letter).close()
        return True
    except RuntimeError:
        return False


def eventually(check, timeout: float = 15.0) -> bool:
    """``check()`` true within ``timeout`` s (the authorizer takes new ACLs from the metadata log)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def test_provisioning_takes_back_a_right_the_table_no_longer_gives(settings: Settings) -> None:
    """As after an upgrade that narrowed the client's rights: a stale ALLOW is removed, an
    operator's DENY of the same principal stays."""

    def acl(operation, permission):
        return AclBinding(ResourceType.TOPIC, settings.topic_dead_letter, ResourcePatternType.LITERAL,
                          "User:client", "*", operation, permission)  # fmt: skip

    old_right, block = acl(AclOperation.READ, AclPermissionType.ALLOW), acl(AclOperation.WRITE, AclPermissionType.DENY)
    admin = AdminClient(client_config(as_identity(settings, ADMIN)))
    for future in admin.create_acls([old_right, block]).values():
        future.result()
    try:
        assert eventually(lambda: reads_dead_letters(settings)), "the old right never took effect"
        assert ensure_acls(settings).removed == 1
        assert eventually(lambda: not reads_dead_letters(settings)), "the client still reads the dead letters"
        remaining = admin.describe_acls(AclBindingFilter(
            ResourceType.TOPIC, settings.topic_dead_letter, ResourcePatternType.LITERAL, "User:client", None,
            AclOperation.ANY, AclPermissionType.ANY)).result()  # fmt: skip
        assert remaining == [block]
        assert ensure_acls(settings).removed == 0
    finally:
        for future in admin.delete_acls([AclBindingFilter(
            block.restype, block.name, block.resource_pattern_type, block.principal, block.host, block.operation,
            block.permission_type)]).values():  # fmt: skip
            future.result()


@pytest.mark.parametrize(("owner", "allowed"), [("ingest", True), ("featurize", False)])
def test_a_service_uses_only_its_own_transactional_ids(settings: Settings, owner: str, allowed: bool) -> None:
    transactional_id = stage_transactional_id(owner, f"sectest-{uuid.uuid4().hex[:6]}")
    producer = Producer(producer_config(as_identity(settings, "ingest"), **{"transactional.id": transactional_id}))
    if allowed:
        producer.init_transactions(30)
        return
    with pytest.raises(KafkaException) as refused:
        producer.init_transactions(30)
    assert refused.value.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED


@pytest.mark.parametrize(
    ("identity", "group", "topic", "allowed"),
    [
        ("client", "fruits-reader-sectest", "topic_predictions", True),
        ("gateway", "fruits-gateway-sectest", "topic_predictions", True),
        ("gateway", "fruits-reader-sectest", "topic_predictions", False),  # the client's groups
        ("client", "fruits-ingest", "topic_predictions", False),  # ingest's group
        ("ingest", "fruits-reader-sectest", "topic_photos", False),  # the client's groups
    ],
)
def test_each_principal_joins_only_its_own_consumer_groups(
    settings: Settings, identity: str, group: str, topic: str, allowed: bool
) -> None:
    group = f"{group}-{uuid.uuid4().hex[:6]}" if group.endswith("-sectest") else group
    consumer = Consumer(consumer_config(as_identity(settings, identity), group))
    consumer.subscribe([getattr(settings, topic)])  # a topic the principal may read
    assigned, error = [], None
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not assigned and error is None:
            msg = consumer.poll(0.5)
            error = msg.error() if msg is not None else None
            assigned = consumer.assignment()
    finally:
        consumer.close()
    if allowed:
        assert assigned and error is None, error
    else:
        assert code(error) == KafkaError.GROUP_AUTHORIZATION_FAILED, error


# --- The broker's secrets and storage -------------------------------------------------------------


def _secured_embedded(stack: Settings) -> None:
    if not secured(stack):
        pytest.skip(f"Kafka runs {stack.kafka_security_protocol}")
    if our_pid(stack, kafka_server.NAME) is None:
        pytest.skip("an existing cluster")


def _passwords(stack: Settings) -> list[str]:
    return [json.loads(path.read_text())["kafka_password"] for path in stack.secrets_dir.glob("*.json")]


def test_the_broker_keeps_its_secrets_to_its_owner_and_out_of_its_log(stack: Settings) -> None:
    _secured_embedded(stack)
    home = stack.state_dir / kafka_server.NAME
    for private in (home / "server.properties", home / "keystore.pem", *stack.secrets_dir.glob("*.json")):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600, private
    log = (stack.state_dir / "logs" / "kafka.log").read_text(errors="replace")
    passwords = _passwords(stack)
    assert len(passwords) == len(IDENTITIES) and "SASL_SSL" in log  # the log is the secured broker's
    assert not [password for password in passwords if password in log]


@pytest.fixture
def own_broker(tmp_path) -> Iterator[Settings]:
    """A second broker of its own (a state dir and ports apart from the session's), as admin."""
    settings = Settings(
        state_dir=tmp_path, kafka_bootstrap_servers=f"127.0.0.1:{free_port_block(kafka_server.PORTS)}"
    ).acting_as(ADMIN)
    try:
        yield single_broker(settings)
    finally:
        stop(settings, [kafka_server.NAME], kill=True)


def start_broker(settings: Settings) -> None:
    pid = kafka_server.start(settings)
    wait_ready(settings, kafka_server.NAME, kafka_problem, pid, time.monotonic())


def test_a_broker_restarts_on_its_storage_and_refuses_a_stale_one(own_broker: Settings) -> None:
    if not secured(own_broker):
        pytest.skip(f"Kafka runs {own_broker.kafka_security_protocol}")
    start_broker(own_broker)  # formats the storage with admin's credential
    stop(own_broker, [kafka_server.NAME])
    start_broker(own_broker)  # the same storage and secrets: admin (and the broker itself) still log in
    assert ensure_topics(own_broker) != []  # admin may create topics: it is the super user
    stop(own_broker, [kafka_server.NAME])
    # The secrets remade (or the storage formatted for PLAINTEXT): refused, with what to do.
    (own_broker.secrets_dir / f"{ADMIN}.json").unlink()
    with pytest.raises(StackError, match="down --purge"):
        start_broker(own_broker)

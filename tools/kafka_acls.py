"""Who may do what on Kafka: the principals of Fruits! and their rights, in one table
(``rights``), and provisioning them as ``admin``: SCRAM users (``ensure_users``: the
embedded broker only, whose passwords the local stack made) and ACLs (``ensure_acls``: any
cluster with SASL where admin may create them; a right the table no longer gives is taken
back). ``python -m tools.stack acls`` prints it.

Principals are ``User:<identity>`` (``core.settings.IDENTITIES``). ``admin`` is the brokers'
super user: provisioning, and operators' tools; it alone reads the dead-letter topic, whose
records hold other users' photos. Every other principal gets what its code needs and
nothing else (the broker runs with ``allow.everyone.if.no.acl.found=false``):

- each service: Read its input topic and its consumer group ``fruits-<service>``; Write its
  output topic, the dead-letter topic and its transactional ids (prefix ``fruits-<service>-``,
  one per FRUITS_INSTANCE_ID);
- ``spark``: Read the topics of the streaming job and its consumer groups (prefix ``fruits-spark-``);
- ``gateway``: Write photos and feedback (with an idempotent producer); Read predictions and its
  replicas' groups (prefix ``fruits-gateway-``: each replica reads every partition, no shared offsets);
- ``client``: Write photos; Read predictions and its reader groups (prefix ``fruits-reader-``).

Kafka implies Describe by Read and Write, which is all that metadata, offset look-ups and
an idempotent producer's id (Write on any topic, KIP-679) need.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from core.kafka import client_config, stage_group_id, stage_transactional_id
from core.settings import PIPELINE_SERVICES, Settings
from services.gateway.predictions import GATEWAY_GROUP_PREFIX
from spark.session import KAFKA_GROUP_ID_PREFIX
from tools.client import READER_GROUP_PREFIX
from tools.provision import ProvisionError

ADMIN = "admin"
"""The super user: the broker's own logins, provisioning, operators."""
SCRAM_ITERATIONS = 8192
"""PBKDF2 iterations of the SCRAM credentials made here (Kafka's minimum is 4096)."""
READ, WRITE = AclOperation.READ, AclOperation.WRITE
TOPIC, GROUP, TRANSACTIONAL_ID = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.TRANSACTIONAL_ID


@dataclass(frozen=True)
class Grant:
    """One right of a principal: ``operation`` on the resource named ``name`` (every name
    starting with it if ``prefixed``)."""

    operation: AclOperation
    resource: ResourceType
    name: str
    prefixed: bool = False

    def binding(self, principal: str) -> AclBinding:
        pattern = ResourcePatternType.PREFIXED if self.prefixed else ResourcePatternType.LITERAL
        return AclBinding(
            self.resource, self.name, pattern, f"User:{principal}", "*", self.operation, AclPermissionType.ALLOW
        )

    def __str__(self) -> str:
        resource = self.resource.name.lower().replace("_", "-")
        return f"{self.operation.name.title()} {resource} {self.name}{'*' if self.prefixed else ''}"


def lake_topics(settings: Settings) -> list[str]:
    """The topics the Spark streaming job reads (``spark.streaming_job.tables``; a unit test
    keeps the two in step)."""
    return [settings.topic_features, settings.topic_reduced, settings.topic_predictions, settings.topic_feedback]


def rights(settings: Settings) -> dict[str, list[Grant]]:
    """Principal → its grants, for the topics of ``settings``; ``admin`` is not in it (super user)."""
    topics = settings.data_topics()  # in stage order: stage i reads topics[i], writes topics[i + 1]
    table = {
        service: [
            Grant(READ, TOPIC, source),
            Grant(READ, GROUP, stage_group_id(service)),
            Grant(WRITE, TOPIC, sink),
            Grant(WRITE, TOPIC, settings.topic_dead_letter),
            Grant(WRITE, TRANSACTIONAL_ID, stage_transactional_id(service, ""), prefixed=True),
        ]
        for service, source, sink in zip(PIPELINE_SERVICES, topics, topics[1:])
    }
    table["spark"] = [
        *(Grant(READ, TOPIC, topic) for topic in lake_topics(settings)),
        Grant(READ, GROUP, f"{KAFKA_GROUP_ID_PREFIX}-", prefixed=True),
    ]
    table["gateway"] = [
        Grant(WRITE, TOPIC, settings.topic_photos),
        Grant(WRITE, TOPIC, settings.topic_feedback),
        Grant(READ, TOPIC, settings.topic_predictions),
        Grant(READ, GROUP, GATEWAY_GROUP_PREFIX, prefixed=True),
    ]
    table["client"] = [
        Grant(WRITE, TOPIC, settings.topic_photos),
        Grant(READ, TOPIC, settings.topic_predictions),
        Grant(READ, GROUP, READER_GROUP_PREFIX, prefixed=True),
    ]
    return table


def bindings(settings: Settings) -> list[AclBinding]:
    """Every ACL of the table, once."""
    every = (grant.binding(who) for who, grants in rights(settings).items() for grant in grants)
    return list(dict.fromkeys(every))


def secured(settings: Settings) -> bool:
    """Whether clients log in (SASL), so that principals and ACLs mean something."""
    return settings.kafka_security_protocol.startswith("SASL_")


def render(settings: Settings) -> str:
    """The table as text: one principal per paragraph."""
    lines = [f"User:{ADMIN}\n  super user (everything; the only reader of {settings.topic_dead_letter})"]
    for principal, grants in rights(settings).items():
        lines.append(f"User:{principal}\n" + "\n".join(f"  {grant}" for grant in grants))
    return "\n".join(lines)


def _admin(settings: Settings) -> AdminClient:
    return AdminClient(client_config(settings))


def _results(futures: Iterable[tuple[object, object]], action: str) -> None:
    """Wait for each future of an admin request; ``action`` (``create ACL``) names it in errors."""
    for item, future in futures:
        try:
            future.result()  # type: ignore[attr-defined]
        except KafkaException as exc:
            error = exc.args[0]
            if error.code() == KafkaError.SECURITY_DISABLED:
                raise ProvisionError(f"cannot {action}: the Kafka cluster has no authorizer ({error})") from exc
            raise ProvisionError(f"cannot {action} {item}: {error}") from exc


def ensure_users(settings: Settings, passwords: dict[str, str]) -> list[str]:
    """Create or update the SCRAM credential of each user → password (as the settings'
    identity, normally admin); return the user names."""
    mechanism = ScramMechanism[settings.kafka_sasl_mechanism.replace("-", "_")]
    info = ScramCredentialInfo(mechanism, SCRAM_ITERATIONS)
    upserts = [UserScramCredentialUpsertion(user, info, password.encode()) for user, password in passwords.items()]
    admin = _admin(settings)  # kept until the futures are done: deleting it cancels them
    _results(admin.alter_user_scram_credentials(upserts).items(), "create SCRAM user")
    return list(passwords)


@dataclass(frozen=True)
class AclChanges:
    created: int
    removed: int

    def __str__(self) -> str:
        return f"{self.created} created, {self.removed} removed"


def topics(settings: Settings) -> set[str]:
    """The topics of this deployment (``tools.provision`` creates them)."""
    return {*settings.data_topics(), settings.topic_feedback, settings.topic_dead_letter}


def stale(binding: AclBinding, settings: Settings, wanted: set[AclBinding]) -> bool:
    """Whether ``binding`` is a right the table no longer gives (an older release's): an
    ALLOW of one of our principals, on one of this deployment's topics or on any group or
    transactional id, that is not in the table. Never a DENY (an operator's block), another
    principal's ACL, or one on another deployment's topics sharing the cluster."""
    return (
        binding not in wanted
        and binding.permission_type == AclPermissionType.ALLOW
        and binding.principal in {f"User:{principal}" for principal in rights(settings)}
        and (binding.restype != TOPIC or binding.name in topics(settings))
    )


def ensure_acls(settings: Settings) -> AclChanges:
    """Make the cluster's ACLs of our principals what the table says: create the ones it
    lacks, and remove the ``stale`` ones, so that a right taken out of the table (say a
    principal that no longer needs a topic) is also taken from the cluster."""
    admin = _admin(settings)
    everything = AclBindingFilter(
        ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY, AclPermissionType.ANY
    )
    try:
        existing = admin.describe_acls(everything).result()
    except KafkaException as exc:
        raise ProvisionError(f"cannot list the ACLs of {settings.kafka_bootstrap_servers}: {exc.args[0]}") from exc
    wanted, present = set(bindings(settings)), set(existing)
    missing = [binding for binding in bindings(settings) if binding not in present]
    if missing:
        _results(admin.create_acls(missing).items(), "create ACL")
    removed = [binding for binding in existing if stale(binding, settings, wanted)]
    if removed:
        exact = [
            AclBindingFilter(b.restype, b.name, b.resource_pattern_type, b.principal, b.host, b.operation,
                             b.permission_type)
            for b in removed
        ]  # fmt: skip
        _results(admin.delete_acls(exact).items(), "remove ACL")
    return AclChanges(len(missing), len(removed))

"""Kafka recipe of the local stack: one Kafka 4 broker in KRaft mode (broker and controller
in one process) on 127.0.0.1, its jars fetched once with Maven (deploy/kafka/pom.xml) into
.jars/kafka. The controller listens on the broker port + 1.

By default (FRUITS_KAFKA_SECURITY_PROTOCOL=SASL_SSL) clients must log in with SCRAM over TLS
and may do only what their ACLs allow (``tools.kafka_acls``); PLAINTEXT starts it open."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from core.limits import size_limits
from core.settings import PROJECT_ROOT, Settings, jaas_config
from tools.kafka_acls import ADMIN
from tools.provision import kafka_problem
from tools.stack.secrets import ensure_secrets
from tools.stack.supervisor import StackError, check_free, loopback_port, spawn
from tools.stack.tls import ensure_server_tls

NAME = "kafka"
ENV = "FRUITS_KAFKA_BOOTSTRAP_SERVERS"
"""A Kafka address in the environment is an existing cluster: not started, only provisioned."""
PORTS = 2  # broker, controller
POM = PROJECT_ROOT / "deploy" / "kafka" / "pom.xml"
JARS = PROJECT_ROOT / ".jars" / "kafka"
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
CREDENTIAL_STAMP = "admin-credential.sha256"
"""Beside the storage: a fingerprint of the admin credential the storage was formatted with."""

LOG4J2 = """\
# Written by tools.stack: Kafka logs to stdout, which the stack appends to logs/kafka.log.
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
"""

problem = kafka_problem
"""Readiness: the broker answers a metadata request."""


def ports(settings: Settings) -> range:
    """The broker's port, then the controller's."""
    port = loopback_port(settings.kafka_bootstrap_servers, "Kafka")
    return range(port, port + PORTS)


def start(settings: Settings) -> int:
    """Format the broker's storage on first use, then start it; its pid."""
    port = ports(settings)[0]
    check_free(ports(settings), NAME)
    java = shutil.which("java")
    if java is None:
        raise StackError("kafka: `java` not found; install a JDK 17+ (apt-get install openjdk-17-jre-headless)")
    fetch_jars()
    home = settings.state_dir.resolve() / NAME
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o700)  # server.properties and the keystore hold secrets
    security = broker_security(settings, home)
    config, log4j = home / "server.properties", home / "log4j2.properties"
    write_private(config, properties(settings, port, home / "data", security))
    log4j.write_text(LOG4J2)
    jvm = [f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{JARS}/*"]
    if not (home / "data" / "meta.properties").exists():
        format_storage(java, jvm, config, home, security)
    elif security is not None:
        check_admin_credential(home, security)
    return spawn(settings, NAME, [java, "-Xms128m", "-Xmx512m", "-XX:+UseG1GC", *jvm, "kafka.Kafka", str(config)])


@dataclass(frozen=True)
class BrokerSecurity:
    """How the broker authenticates: SASL on every listener, ``admin`` its super user."""

    protocol: str
    """Of the clients' listener: SASL_SSL, or SASL_PLAINTEXT."""
    mechanism: str
    """Clients' SCRAM mechanism (the credentials live in the cluster's metadata)."""
    admin_password: str
    keystore: Path | None
    """PEM file: the server's private key, then its certificate chain (SASL_SSL)."""
    truststore: Path | None
    """The stack's CA: the broker's own connections (inter-broker, to the controller) check it."""

    def credential_fingerprint(self) -> str:
        """What the storage was formatted with, without the password itself."""
        return hashlib.sha256(f"{ADMIN}:{self.mechanism}:{self.admin_password}".encode()).hexdigest()


def broker_security(settings: Settings, home: Path) -> BrokerSecurity | None:
    """The broker's security for ``settings.kafka_security_protocol``: None for PLAINTEXT (no
    authentication, no ACLs: an explicit opt-in); SASL with SCRAM otherwise, over TLS with
    the stack's certificate (``tls.ensure_server_tls``) for SASL_SSL."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    if protocol not in ("SASL_SSL", "SASL_PLAINTEXT"):
        raise StackError(
            f"kafka: the local stack's broker runs SASL_SSL (default), SASL_PLAINTEXT or PLAINTEXT, "
            f"not FRUITS_KAFKA_SECURITY_PROTOCOL={protocol}"
        )
    if settings.kafka_sasl_mechanism not in SCRAM_MECHANISMS:
        raise StackError(
            f"kafka: the local stack's broker authenticates with {' or '.join(SCRAM_MECHANISMS)}, "
            f"not FRUITS_KAFKA_SASL_MECHANISM={settings.kafka_sasl_mechanism}"
        )
    password = ensure_secrets(settings)[ADMIN]["kafka_password"]
    keystore = truststore = None
    if protocol == "SASL_SSL":
        tls = ensure_server_tls(settings)
        keystore, truststore = home / "keystore.pem", tls.ca
        write_private(keystore, tls.key.read_text() + tls.certificate.read_text())
    return BrokerSecurity(protocol, settings.kafka_sasl_mechanism, password, keystore, truststore)


def format_storage(java: str, jvm: list[str], config: Path, home: Path, security: BrokerSecurity | None) -> None:
    """Format the storage of a new cluster; with SASL, with ``admin``'s SCRAM credential in
    its first metadata (the only way in: SCRAM users are kept in the metadata log)."""
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
    # "--cluster-id=ID": an id starting with "-" would otherwise be read as an option.
    command = [java, *jvm, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "--config", str(config)]
    if security is not None:
        # The password is on this short-lived command line (no other way to bootstrap it);
        # it is kept out of any message below.
        command += ["--add-scram", f"{security.mechanism}=[name={ADMIN},password={security.admin_password}]"]
    fmt = subprocess.run(command, capture_output=True, text=True, check=False)
    if fmt.returncode != 0:
        output = fmt.stdout + fmt.stderr
        if security is not None:
            output = output.replace(security.admin_password, "***")
        raise StackError(f"kafka: formatting {home / 'data'} failed:\n{output}")
    if security is not None:
        (home / CREDENTIAL_STAMP).write_text(security.credential_fingerprint() + "\n")


def check_admin_credential(home: Path, security: BrokerSecurity) -> None:
    """The storage is formatted once: refuse to start SASL on one that lacks ``admin``'s
    current credential (formatted for PLAINTEXT, or before the secrets were remade), which
    would leave the broker unable to log in to itself."""
    stamp = home / CREDENTIAL_STAMP
    if stamp.is_file() and stamp.read_text().strip() == security.credential_fingerprint():
        return
    raise StackError(
        f"kafka: the storage in {home / 'data'} was formatted without the current {ADMIN} credential "
        "(with FRUITS_KAFKA_SECURITY_PROTOCOL=PLAINTEXT, or before the secrets were remade): "
        "`python -m tools.stack down --purge` deletes the local stack's data, then `up` formats it again"
    )


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by the owner only (from its creation on)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # an existing file keeps its mode otherwise
    with os.fdopen(descriptor, "w") as out:
        out.write(text)


def properties(settings: Settings, port: int, data: Path, security: BrokerSecurity | None = None) -> str:
    """server.properties of the single broker: the largest message it takes is the
    dead-letter limit (core.limits), so a dead letter of the largest record always fits."""
    return f"""\
# Written by tools.stack on every start: change the code, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{port + 1}
listeners=BROKER://127.0.0.1:{port},CONTROLLER://127.0.0.1:{port + 1}
advertised.listeners=BROKER://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=BROKER
{security_properties(security)}
log.dirs={data}
# One broker: one replica of everything, and few coordinator partitions to elect.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=6
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
min.insync.replicas=1
group.initial.rebalance.delay.ms=0
# Topics come from tools.provision; a typo in a topic name fails instead of creating one.
auto.create.topics.enable=false
num.partitions={settings.topic_partitions}
message.max.bytes={size_limits(settings).dead_letter_bytes}
transaction.partition.verification.enable=false
num.network.threads=2
num.io.threads=2
"""


def security_properties(security: BrokerSecurity | None) -> str:
    if security is None:
        return (
            "# FRUITS_KAFKA_SECURITY_PROTOCOL=PLAINTEXT: no TLS, no authentication, no ACLs.\n"
            "listener.security.protocol.map=BROKER:PLAINTEXT,CONTROLLER:PLAINTEXT"
        )
    mechanism, password = security.mechanism, security.admin_password
    controller_protocol = "SASL_SSL" if security.keystore else "SASL_PLAINTEXT"
    lines = [
        f"listener.security.protocol.map=BROKER:{security.protocol},CONTROLLER:{controller_protocol}",
        "# Clients and the broker itself (inter-broker, as admin) log in with SCRAM; users are",
        "# created by provisioning (tools.kafka_acls), admin's at format time.",
        f"listener.name.broker.sasl.enabled.mechanisms={mechanism}",
        f"sasl.mechanism.inter.broker.protocol={mechanism}",
        f"listener.name.broker.{mechanism.lower()}.sasl.jaas.config={jaas_config(mechanism, ADMIN, password)}",
        "# The controller cannot use SCRAM: its credentials live in the metadata log the controller",
        "# itself serves. So PLAIN with one static user, admin, on its own loopback listener, over",
        "# TLS like the clients' listener (no password crosses even loopback in clear).",
        "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
        "sasl.mechanism.controller.protocol=PLAIN",
        "listener.name.controller.plain.sasl.jaas.config="
        + jaas_config("PLAIN", ADMIN, password, **{f"user_{ADMIN}": password}),
        "# Nothing is allowed unless an ACL says so; admin (provisioning, operators) may do all.",
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        f"super.users=User:{ADMIN}",
        "allow.everyone.if.no.acl.found=false",
    ]
    if security.keystore is not None and security.truststore is not None:
        lines += [
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={security.keystore}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={security.truststore}",
        ]
    return "\n".join(lines)


def fetch_jars() -> None:
    """Fetch Kafka's jars once; again when the pom changes, so no stale jar stays on the classpath."""
    stamp = JARS / ".pom-sha256"
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()
    if stamp.is_file() and stamp.read_text() == digest:
        return
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError(f"kafka: jars missing in {JARS} and `mvn` not found; install Maven (apt-get install maven)")
    print(f"kafka: fetching jars into {JARS} with Maven …", flush=True)
    began = time.monotonic()
    shutil.rmtree(JARS, ignore_errors=True)
    cmd = [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies", f"-DoutputDirectory={JARS}"]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise StackError(f"kafka: `{' '.join(cmd)}` failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    stamp.write_text(digest)
    print(f"kafka: jars fetched in {time.monotonic() - began:.1f} s", flush=True)

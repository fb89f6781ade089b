"""Kafka recipe of the local stack: one Kafka 4 broker in KRaft mode (broker and controller
in one process) on 127.0.0.1, its jars fetched once with Maven (deploy/kafka/pom.xml) into
.jars/kafka. The controller listens on the broker port + 1."""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from core.limits import size_limits
from core.settings import PROJECT_ROOT, Settings
from tools.provision import kafka_problem
from tools.stack.supervisor import StackError, check_free, loopback_port, spawn

NAME = "kafka"
ENV = "FRUITS_KAFKA_BOOTSTRAP_SERVERS"
"""A Kafka address in the environment is an existing cluster: not started, only provisioned."""
PORTS = 2  # broker, controller
POM = PROJECT_ROOT / "deploy" / "kafka" / "pom.xml"
JARS = PROJECT_ROOT / ".jars" / "kafka"

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


def start(settings: Settings) -> int:
    """Format the broker's storage on first use, then start it; its pid."""
    port = loopback_port(settings.kafka_bootstrap_servers, "Kafka")
    check_free(range(port, port + PORTS), NAME)
    java = shutil.which("java")
    if java is None:
        raise StackError("kafka: `java` not found; install a JDK 17+ (apt-get install openjdk-17-jre-headless)")
    fetch_jars()
    home = settings.state_dir.resolve() / NAME
    home.mkdir(parents=True, exist_ok=True)
    config, log4j = home / "server.properties", home / "log4j2.properties"
    config.write_text(properties(settings, port, home / "data"))
    log4j.write_text(LOG4J2)
    jvm = [f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{JARS}/*"]
    if not (home / "data" / "meta.properties").exists():
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        # "--cluster-id=ID": an id starting with "-" would otherwise be read as an option.
        fmt = subprocess.run(
            [java, *jvm, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "--config", str(config)],
            capture_output=True,
            text=True,
            check=False,
        )
        if fmt.returncode != 0:
            raise StackError(f"kafka: formatting {home / 'data'} failed:\n{fmt.stdout}{fmt.stderr}")
    return spawn(settings, NAME, [java, "-Xms128m", "-Xmx512m", "-XX:+UseG1GC", *jvm, "kafka.Kafka", str(config)])


def properties(settings: Settings, port: int, data: Path) -> str:
    """server.properties of the single broker: the largest message it takes is the
    dead-letter limit (core.limits), so a dead letter of the largest record always fits."""
    return f"""\
# Written by tools.stack on every start: change the code, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{port + 1}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{port + 1}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
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

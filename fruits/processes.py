"""Starting and stopping the five services as child processes (demo, bench, tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from fruits.metrics import STAGE_PORTS

SERVICES = ("ingest", "preprocess", "featurize", "reduce", "predict")


@dataclass
class ServiceProcess:
    name: str
    process: subprocess.Popen
    log_path: Path
    metrics_port: int

    def peak_rss_bytes(self) -> int:
        """Peak resident set size (VmHWM) of the running process."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmHWM for {self.name}")


def start_service(name: str, log_dir: Path, env: dict[str, str] | None = None, port_offset: int = 0) -> ServiceProcess:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    port = STAGE_PORTS[name] + port_offset
    child_env = {**os.environ, **(env or {}), "FRUITS_METRICS_PORT": str(port), "PYTHONUNBUFFERED": "1"}
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"], stdout=log, stderr=subprocess.STDOUT, env=child_env
        )
    return ServiceProcess(name, process, log_path, port)


def wait_ready(service: ServiceProcess, timeout: float = 60.0) -> None:
    """Wait until the service serves /metrics (it then has checked Kafka is reachable)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise RuntimeError(
                f"{service.name} exited with code {service.process.returncode}; see {service.log_path}:\n"
                + service.log_path.read_text()[-2000:]
            )
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{service.metrics_port}/metrics", timeout=1).read()
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{service.name} not ready after {timeout:.0f} s; see {service.log_path}")


def start_services(
    log_dir: Path, env: dict[str, str] | None = None, port_offset: int = 0
) -> dict[str, ServiceProcess]:
    services = {name: start_service(name, log_dir, env, port_offset) for name in SERVICES}
    try:
        for service in services.values():
            wait_ready(service)
    except Exception:
        stop_services(services)
        raise
    return services


def stop_service(service: ServiceProcess, timeout: float = 20.0) -> int:
    """SIGTERM (the service commits its batch and leaves), SIGKILL if it hangs."""
    if service.process.poll() is None:
        service.process.send_signal(signal.SIGTERM)
        try:
            service.process.wait(timeout)
        except subprocess.TimeoutExpired:
            service.process.kill()
            service.process.wait()
    return service.process.returncode


def stop_services(services: dict[str, ServiceProcess]) -> None:
    for service in services.values():
        stop_service(service)

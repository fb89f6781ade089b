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

from pydantic import TypeAdapter

from core.kafka import READY_MESSAGE
from core.metrics import STAGE_PORTS
from core.settings import PIPELINE_SERVICES
from tools.stack.supervisor import busy_ports


@dataclass
class ServiceProcess:
    name: str
    process: subprocess.Popen
    log_path: Path
    metrics_port: int | None
    """None when the service runs with FRUITS_METRICS_ENABLED=false (no /metrics endpoint)."""

    log_offset: int = 0
    """Where this run's lines start in the (appended) log."""

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
    # Each service is its own identity (its __main__'s), not this process's, unless ``env`` names one.
    inherited = {name: value for name, value in os.environ.items() if name != "FRUITS_IDENTITY"}
    child_env = {**inherited, **(env or {}), "FRUITS_METRICS_PORT": str(port), "PYTHONUNBUFFERED": "1"}
    # Parsed as Settings parses it, without reading the rest of the environment.
    metrics_enabled = TypeAdapter(bool).validate_python(child_env.get("FRUITS_METRICS_ENABLED", "true"))
    if metrics_enabled and busy_ports([port]):  # else wait_ready would take another process's /metrics for ours
        raise RuntimeError(f"{name}: metrics port {port} on 127.0.0.1 is in use by another process")
    with log_path.open("ab") as log:
        start = log.tell()
        process = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"], stdout=log, stderr=subprocess.STDOUT, env=child_env
        )
    return ServiceProcess(name, process, log_path, port if metrics_enabled else None, start)


def free_port_offset(first: int, step: int = 100, tries: int = 50) -> int:
    """The first offset from ``first`` (by ``step``) at which all the services' metrics
    ports are free: for runs beside a demo (offset 0) or other tests."""
    for offset in range(first, first + step * tries, step):
        if not busy_ports(port + offset for port in STAGE_PORTS.values()):
            return offset
    raise RuntimeError(f"no free metrics port offset from {first}")


def _is_ready(service: ServiceProcess) -> bool:
    if service.metrics_port is None:  # no endpoint: its log says when it reached Kafka
        with service.log_path.open("rb") as log:
            log.seek(service.log_offset)
            return (READY_MESSAGE % service.name).encode() in log.read()
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{service.metrics_port}/metrics", timeout=1).read()
        return True
    except OSError:
        return False


def wait_ready(service: ServiceProcess, timeout: float = 60.0) -> None:
    """Wait until the service has checked Kafka is reachable (and serves /metrics if enabled)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise RuntimeError(
                f"{service.name} exited with code {service.process.returncode}; see {service.log_path}:\n"
                + service.log_path.read_text()[-2000:]
            )
        if _is_ready(service):
            return
        time.sleep(0.2)
    raise TimeoutError(f"{service.name} not ready after {timeout:.0f} s; see {service.log_path}")


def start_services(log_dir: Path, env: dict[str, str] | None = None, port_offset: int = 0) -> dict[str, ServiceProcess]:
    services = {name: start_service(name, log_dir, env, port_offset) for name in PIPELINE_SERVICES}
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

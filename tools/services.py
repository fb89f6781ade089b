"""Starting, supervising and stopping the five services, and the HTTP gateway, as child
processes (`fruits services`, demo, bench, tests).

Each process runs on a replica slot of its service (``FRUITS_INSTANCE_ID``, ``core.slots``):
``start_services`` gives replica N of a service slot N, and the ``Supervisor`` starts a
service that exits again on the same slot, so it takes its partitions back at once and
fences its own zombie.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import TypeAdapter

from core.kafka import READY_MESSAGE
from core.metrics import STAGE_PORTS
from core.settings import PIPELINE_SERVICES, Settings
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
    slot: int | None = None
    """The replica slot it was started on (its FRUITS_INSTANCE_ID); None: the lowest free one."""

    @property
    def key(self) -> str:
        """``featurize`` for a service's first replica, ``featurize-1`` for its second, …"""
        return self.name if not self.slot else f"{self.name}-{self.slot}"

    def peak_rss_bytes(self) -> int:
        """Peak resident set size (VmHWM) of the running process."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmHWM for {self.name}")


GATEWAY = "gateway"
"""``python -m services.gateway``: started like a service; it serves /metrics and /healthz on its API port."""

SLOT_PORT_STEP = 10
"""Replica N of a service serves /metrics on its port + N × this (featurize: 9103, 9113, …)."""
MAX_REPLICAS = 10
"""Most replicas of one service `start_services` starts (their metrics ports stay apart)."""


def start_service(
    name: str,
    log_dir: Path,
    env: dict[str, str] | None = None,
    port_offset: int = 0,
    slot: int | None = None,
    module: str | None = None,
) -> ServiceProcess:
    """Start ``python -m services.<name>`` (or ``module``: a test's sabotaged stand-in) on
    replica ``slot`` (None: the lowest free slot, or FRUITS_INSTANCE_ID of the environment), its
    output appended to its log. The gateway listens on FRUITS_GATEWAY_PORT of ``env`` or the
    environment (``port_offset`` and ``slot`` do not apply to it)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / (f"{name}.log" if not slot else f"{name}-{slot}.log")
    if name == GATEWAY:
        given = (env or {}).get("FRUITS_GATEWAY_PORT") or os.environ.get("FRUITS_GATEWAY_PORT")
        port = int(given or Settings.model_fields["gateway_port"].default)
    else:
        port = STAGE_PORTS[name] + port_offset + SLOT_PORT_STEP * (slot or 0)
    # Each service is itself on Kafka and S3 (its own credentials and rights), whatever
    # identity the starting process has.
    child_env = {
        **os.environ,
        "FRUITS_IDENTITY": name,
        **(env or {}),
        "FRUITS_METRICS_PORT": str(port),
        "PYTHONUNBUFFERED": "1",
    }
    if slot is not None:
        child_env["FRUITS_INSTANCE_ID"] = str(slot)
    # Parsed as Settings parses it, without reading the rest of the environment.
    metrics_enabled = TypeAdapter(bool).validate_python(child_env.get("FRUITS_METRICS_ENABLED", "true"))
    metrics_enabled = metrics_enabled or name == GATEWAY  # its API port answers /healthz anyway
    if metrics_enabled and busy_ports([port]):  # else wait_ready would take another process's /metrics for ours
        raise RuntimeError(f"{name}: metrics port {port} on 127.0.0.1 is in use by another process")
    with log_path.open("ab") as log:
        start = log.tell()
        process = subprocess.Popen(
            [sys.executable, "-m", module or f"services.{name}"], stdout=log, stderr=subprocess.STDOUT, env=child_env
        )
    return ServiceProcess(name, process, log_path, port if metrics_enabled else None, start, slot)


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
    path = "/healthz" if service.name == GATEWAY else "/metrics"  # the gateway: once it follows the predictions
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{service.metrics_port}{path}", timeout=1).read()
        return True
    except OSError:
        return False


def wait_ready(service: ServiceProcess, timeout: float = 60.0) -> None:
    """Wait until the service has checked Kafka is reachable (and serves /metrics if enabled;
    the gateway: until its /healthz says it follows the predictions topic)."""
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


def start_services(
    log_dir: Path, env: dict[str, str] | None = None, port_offset: int = 0, replicas: dict[str, int] | None = None
) -> dict[str, ServiceProcess]:
    """Start the five services (``replicas``: how many of a service, 1 by default), each on
    its slot, and wait until all are ready; keyed by ``ServiceProcess.key``."""
    counts = {name: (replicas or {}).get(name, 1) for name in PIPELINE_SERVICES}
    if unknown := set(replicas or {}) - set(PIPELINE_SERVICES):
        raise ValueError(f"no such service: {', '.join(sorted(unknown))}")
    if bad := {name: n for name, n in counts.items() if not 1 <= n <= MAX_REPLICAS}:
        raise ValueError(f"replicas must be 1 to {MAX_REPLICAS}: {bad}")
    services: dict[str, ServiceProcess] = {}
    try:
        for name in PIPELINE_SERVICES:
            for slot in range(counts[name]):
                service = start_service(name, log_dir, env, port_offset, slot)
                services[service.key] = service
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


RESTART_BACKOFF_INITIAL_SECONDS = 1.0
"""Wait before starting again a service that exited; it doubles with each exit in a row …"""
RESTART_BACKOFF_MAX_SECONDS = 60.0
"""… up to this."""
STABLE_AFTER_SECONDS = 60.0
"""A service that ran this long before exiting starts again after the shortest wait."""


@dataclass
class Supervisor:
    """Keeps the services running: one that exits is started again on its slot, after a wait
    that doubles while it keeps exiting (a crash loop costs little, and Prometheus's
    ``FruitsCrashLooping`` alert sees the restarts); each exit and restart is reported.
    ``check`` is called periodically; ``stop_services(supervisor.services)`` ends it all."""

    services: dict[str, ServiceProcess]
    log_dir: Path
    env: dict[str, str] | None = None
    port_offset: int = 0
    report: Callable[[str], object] = lambda line: print(line, file=sys.stderr)
    clock: Callable[[], float] = time.monotonic
    start: Callable[..., ServiceProcess] = start_service
    restarts: Counter[str] = field(default_factory=Counter)
    """Restarts per service (``ServiceProcess.key``) since the supervisor began."""
    exits: Counter[str] = field(default_factory=Counter)
    """Exits seen per service, whether or not it was started again yet."""
    _started_at: dict[str, float] = field(default_factory=dict)
    _delay: dict[str, float] = field(default_factory=dict)
    _due: dict[str, float] = field(default_factory=dict)

    def check(self) -> None:
        now = self.clock()
        for key, service in list(self.services.items()):
            started = self._started_at.setdefault(key, now)
            code = service.process.poll()
            if code is None:
                continue
            if key not in self._due:
                ran = now - started
                previous = self._delay.get(key)
                delay = (
                    RESTART_BACKOFF_INITIAL_SECONDS
                    if previous is None or ran >= STABLE_AFTER_SECONDS
                    else min(RESTART_BACKOFF_MAX_SECONDS, previous * 2)
                )
                self._delay[key], self._due[key] = delay, now + delay
                self.exits[key] += 1
                self.report(
                    f"{key} exited with status {code} after {ran:.0f} s; starting it again in {delay:.0f} s "
                    f"(see {service.log_path})"
                )
            elif now >= self._due[key]:
                del self._due[key]
                self._started_at[key] = now
                self.restarts[key] += 1
                try:
                    self.services[key] = self.start(
                        service.name, self.log_dir, self.env, self.port_offset, service.slot
                    )
                except (OSError, RuntimeError) as exc:  # e.g. its metrics port taken meanwhile: try again later
                    self.report(f"{key}: cannot start it again: {exc}")
                    continue
                self.report(f"{key} started again (restart {self.restarts[key]})")

    def run(self, stop: threading.Event, interval: float = 0.5) -> None:
        """``check`` every ``interval`` seconds until ``stop`` is set."""
        while not stop.wait(interval):
            self.check()


@contextmanager
def supervised(
    log_dir: Path,
    port_offset: int = 0,
    replicas: dict[str, int] | None = None,
    report: Callable[[str], object] = lambda line: print(line, file=sys.stderr),
) -> Iterator[Supervisor]:
    """The five services (``start_services``) kept running by a Supervisor in a background
    thread, as `fruits services` runs them; all stopped on leaving."""
    services = start_services(log_dir, port_offset=port_offset, replicas=replicas)
    supervisor = Supervisor(services, log_dir, port_offset=port_offset, report=report)
    stop = threading.Event()
    thread = threading.Thread(target=supervisor.run, args=(stop,), name="service-supervisor", daemon=True)
    thread.start()
    try:
        yield supervisor
    finally:
        stop.set()
        thread.join()
        stop_services(supervisor.services)

"""Prometheus recipe of the local stack (``make monitor``, ``python -m tools.monitor``):
scrapes the five services' /metrics with deploy/prometheus/prometheus.yml and evaluates
its recording and alert rules, on 127.0.0.1 (default port 19090).

It uses Debian's ``prometheus`` package (``make setup`` installs it), with its own port and
data dir (FRUITS_STATE_DIR/prometheus, kept by ``down``), never the package's system
service. Its log is FRUITS_STATE_DIR/logs/prometheus.log.

The config lists each service's first replica. The others come and go with
`fruits services --replicas`, which names them in FRUITS_STATE_DIR/prometheus-targets/
(``publish_replicas``). Prometheus reads that folder by file-based discovery, so a
replica is scraped while it runs and alerted on if it dies, and it is not listed once
it is stopped on purpose. The config Prometheus runs is ``running_config``: the given one
with that discovery added to its ``fruits`` job.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable
from pathlib import Path

import yaml

from core.settings import PROJECT_ROOT, Settings
from tools.stack.supervisor import StackError, check_free, our_pid, spawn, stop, wait_ready

CONFIG = PROJECT_ROOT / "deploy" / "prometheus" / "prometheus.yml"
DEFAULT_PORT = 19090
NAME = "prometheus"
START_TIMEOUT_S = 60.0
SERVICES_JOB = "fruits"
"""The scrape job of the services: the replicas' targets are added to it."""
REPLICA_TARGETS = "services.json"


def targets_dir(settings: Settings) -> Path:
    """The folder of file-discovered targets (``publish_replicas``)."""
    return settings.state_dir.resolve() / "prometheus-targets"


def running_config(settings: Settings, config: Path) -> Path:
    """``config`` as Prometheus runs it, written beside its data: its rule files by absolute
    path (they are relative to ``config``) and the services' job also reading its targets
    from ``targets_dir``."""
    document = yaml.safe_load(config.read_text())
    document["rule_files"] = [str((config.parent / path).resolve()) for path in document.get("rule_files", [])]
    folder = targets_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)  # Prometheus watches a folder only if it exists
    for job in document.get("scrape_configs", []):
        if job.get("job_name") == SERVICES_JOB:
            job["file_sd_configs"] = [{"files": [str(folder / "*.json")]}]
    path = settings.state_dir.resolve() / "prometheus.yml"  # the state dir exists: targets_dir is in it
    header = f"# Written by tools.stack.prometheus_server from {config}: change that file.\n"
    path.write_text(header + yaml.safe_dump(document, sort_keys=False))
    return path


def publish_replicas(settings: Settings, replicas: Iterable[tuple[str, int, int]]) -> Path:
    """Name the running replicas beyond each service's first, as ``(service, slot, metrics
    port)``, for Prometheus to scrape (the first replica is in the config). Written whole
    and renamed into place, so Prometheus never reads half a file; none: the file is emptied."""
    groups = [
        {"targets": [f"127.0.0.1:{port}"], "labels": {"service": service}}
        for service, slot, port in sorted(replicas)
        if slot
    ]
    folder = targets_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / REPLICA_TARGETS
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(groups, indent=1) + "\n")
    os.replace(partial, path)
    return path


def prometheus_binary() -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        raise StackError("prometheus not found: `make setup` installs Debian's package (or `make prometheus-install`)")
    return binary


def prometheus_argv(config: Path, data_dir: Path, port: int, retention: str = "7d") -> list[str]:
    """Command line of a Prometheus on 127.0.0.1:``port`` keeping its data in ``data_dir``."""
    return [
        prometheus_binary(),
        f"--config.file={config}",
        f"--storage.tsdb.path={data_dir}",
        f"--storage.tsdb.retention.time={retention}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def query(url: str, promql: str, timeout: float = 10.0) -> list[dict]:
    """Result of an instant query through the HTTP API (raises on a PromQL error)."""
    params = urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(f"{url}/api/v1/query?{params}", timeout=timeout) as response:
        body = json.load(response)
    if body.get("status") != "success":
        raise ValueError(f"{promql}: {body}")
    return body["data"]["result"]


def up(settings: Settings, port: int = DEFAULT_PORT, config: Path = CONFIG, timeout: float = START_TIMEOUT_S) -> str:
    """Start Prometheus unless it runs; its URL."""
    url = f"http://127.0.0.1:{port}"
    if pid := our_pid(settings, NAME):
        print(f"prometheus: already running (pid {pid}) at {url}", flush=True)
        return url
    check_free(range(port, port + 1), NAME)
    data = settings.state_dir.resolve() / NAME
    data.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    pid = spawn(settings, NAME, prometheus_argv(running_config(settings, config.resolve()), data, port))
    wait_ready(
        settings, NAME, lambda _: None if ready(url) else f"{url}/-/ready does not answer", pid, started, timeout
    )
    print(f"prometheus: running (pid {pid}), scraping the services of {config}", flush=True)
    print(f"prometheus: {url}  (alerts: {url}/alerts, targets: {url}/targets)", flush=True)
    return url


def down(settings: Settings) -> None:
    """Stop it (its data is kept)."""
    if not stop(settings, [NAME]):
        print("prometheus: not running", flush=True)

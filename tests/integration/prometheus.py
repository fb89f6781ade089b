"""A real Prometheus for the tests that check the dashboards: the repo's scrape config
retargeted to the processes a test started, and every panel's PromQL run through its API.

Each panel query is checked where the process it reads runs: the gateway's and the feedback
counter's by test_monitoring (with the gateway), the Spark driver's by test_spark_streaming,
the rest by test_monitoring (the five services)."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from core.settings import PROJECT_ROOT
from tools.stack.prometheus_server import prometheus_argv, query, ready
from tools.stack.supervisor import free_port_block

PROMETHEUS_DIR = PROJECT_ROOT / "deploy" / "prometheus"
DASHBOARDS = sorted((PROJECT_ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
READS = {
    "gateway": re.compile(r"fruits_gateway_|fruits_feedback_|service=\"gateway\""),
    "spark": re.compile(r"fruits_spark_|fruits_pca_refits_|service=\"spark\"|stage=\"spark\""),
}


def reads(expr: str) -> str:
    """Which process a query needs data from: ``gateway``, ``spark`` or ``services`` (the five)."""
    return next((process for process, pattern in READS.items() if pattern.search(expr)), "services")


def panel_queries(process: str) -> dict[str, str]:
    """Where (dashboard / panel / refId) → PromQL, of every panel target that reads ``process``."""
    return {
        f"{path.name} / {panel['title']} / {target['refId']}": target["expr"]
        for path in DASHBOARDS
        for panel in json.loads(path.read_text())["panels"]
        for target in panel["targets"]
        if reads(target["expr"]) == process
    }


def scrape_config(tmp: Path, port_of: Callable[[str, int], int]) -> Path:
    """The repo's prometheus.yml with 1 s scrapes and evaluations, its rule files, and each
    target's port replaced by ``port_of(service, configured port)``."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(PROMETHEUS_DIR / path) for path in config["rule_files"]]
    for job in config["scrape_configs"]:
        for group in job["static_configs"]:
            service = group["labels"]["service"]
            group["targets"] = [
                f"{host}:{port_of(service, int(port))}" for host, port in (t.rsplit(":", 1) for t in group["targets"])
            ]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextmanager
def running_prometheus(tmp: Path, port_of: Callable[[str, int], int]) -> Iterator[str]:
    """Prometheus on a free loopback port scraping ``scrape_config(tmp, port_of)``; yields its URL."""
    port = free_port_block(1)
    url = f"http://127.0.0.1:{port}"
    log = tmp / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            prometheus_argv(scrape_config(tmp, port_of), tmp / "data", port), stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while not ready(url):
            assert process.poll() is None, f"prometheus exited: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"prometheus not ready after 60 s: {log.read_text()[-2000:]}"
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def without_data(url: str, queries: dict[str, str], timeout: float = 60.0) -> dict[str, str]:
    """The queries that still return nothing after ``timeout`` (rates need two scrapes,
    recording rules an evaluation)."""
    empty = dict(queries)
    deadline = time.monotonic() + timeout
    while empty and time.monotonic() < deadline:
        empty = {where: expr for where, expr in empty.items() if not query(url, expr)}
        if empty:
            time.sleep(1)
    return empty


def report(empty: dict[str, str]) -> str:
    return "no data for:\n" + "\n".join(f"  {where}: {expr}" for where, expr in empty.items())

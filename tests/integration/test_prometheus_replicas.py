"""The local Prometheus finds the replicas `fruits services --replicas` names, while they run.

A real Prometheus runs on the config as ``make monitor`` runs it (``running_config``), and it
scrapes a /metrics endpoint that is named only in the targets folder (``publish_replicas``)."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Counter, start_http_server

from core.settings import Settings
from tools.stack.prometheus_server import prometheus_argv, publish_replicas, query, ready, running_config
from tools.stack.supervisor import free_port_block


def wait_for(check, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.5)
    raise AssertionError(f"after {timeout:.0f} s: {what}")


@pytest.fixture
def replica_port():
    """A /metrics endpoint standing in for a second featurize replica."""
    registry = CollectorRegistry()
    Counter("fruits_replica_probe", "Served by the stand-in replica.", registry=registry).inc()
    port = free_port_block(1)
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    yield port
    server.shutdown()
    thread.join()


def test_a_published_replica_is_scraped_and_an_unpublished_one_dropped(tmp_path, replica_port):
    settings = Settings(state_dir=tmp_path / "state")
    settings.state_dir.mkdir()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n  - job_name: fruits\n    static_configs: []\n"
    )
    publish_replicas(settings, [("featurize", 0, 9103), ("featurize", 1, replica_port)])
    port = free_port_block(1)
    url = f"http://127.0.0.1:{port}"
    with (tmp_path / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            prometheus_argv(running_config(settings, config), tmp_path / "data", port), stdout=log, stderr=log
        )
    try:
        wait_for(lambda: ready(url), "Prometheus ready")
        scraped = wait_for(
            lambda: query(url, 'fruits_replica_probe_total{job="fruits", service="featurize"}'),
            "the published replica scraped",
        )
        assert scraped[0]["metric"]["instance"] == f"127.0.0.1:{replica_port}"

        def targets():
            with urllib.request.urlopen(f"{url}/api/v1/targets", timeout=5) as response:
                return json.load(response)["data"]["activeTargets"]

        # The first replica is the config's own target: the file names the others only.
        assert [t["labels"]["instance"] for t in targets()] == [f"127.0.0.1:{replica_port}"]
        publish_replicas(settings, [])
        wait_for(lambda: not targets(), "the replica no longer a target once unpublished")
    finally:
        process.terminate()
        process.wait(30)

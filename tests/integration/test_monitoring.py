"""Monitoring, proven on a real Prometheus: it scrapes the five services (with the repo's
scrape config, retargeted, and its rule files) while photos flow; then every Grafana
panel's PromQL and every recording rule must return data, and stopping predict must
raise its alert."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration import as_identity
from core.photos import new_photo_id
from tools.client import PhotoSender
from tools.roundtrip import round_trip
from core.metrics import STAGE_PORTS
from tools.stack.prometheus_server import prometheus_argv, query, ready
from tools.services import ServiceProcess, free_port_offset, start_services, stop_service, stop_services
from core.settings import PROJECT_ROOT, Settings
from tools.stack.supervisor import free_port_block
from core.datasets import list_images

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        __import__("shutil").which("prometheus") is None,
        reason="prometheus not installed (Debian's package; `make setup` installs it)",
    ),
]

DATA = PROJECT_ROOT.parent / "shared" / "data" / "fruits360"
PROMETHEUS_DIR = PROJECT_ROOT / "deploy" / "prometheus"
DASHBOARDS = sorted((PROJECT_ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
BAD_PHOTOS = 3


@pytest.fixture(scope="module")
def settings(trained: Settings) -> Settings:
    """The tests send photos and read predictions as the ``client`` identity."""
    return as_identity(trained, "client")


@pytest.fixture(scope="module")
def services(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServiceProcess]]:
    running = start_services(
        tmp_path_factory.mktemp("logs"),
        env={"FRUITS_METRICS_STATS_INTERVAL_SECONDS": "1"},
        port_offset=free_port_offset(200),  # a demo uses the default ports, test_pipeline 100
    )
    try:
        yield running
    finally:
        stop_services(running)


def scrape_config(tmp: Path, port_offset: int) -> Path:
    """The repo's prometheus.yml with the services' test ports, 1 s scrapes and evaluations,
    and the repo's rule files."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(PROMETHEUS_DIR / path) for path in config["rule_files"]]
    for job in config["scrape_configs"]:
        for group in job["static_configs"]:
            group["targets"] = [
                f"{host}:{int(port) + port_offset}" for host, port in (t.rsplit(":", 1) for t in group["targets"])
            ]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path



@pytest.fixture(scope="module")
def prometheus(services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("prometheus")
    offset = services["ingest"].metrics_port - STAGE_PORTS["ingest"]
    port = free_port_block(1)
    url = f"http://127.0.0.1:{port}"
    log = tmp / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            prometheus_argv(scrape_config(tmp, offset), tmp / "data", port), stdout=out, stderr=subprocess.STDOUT
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


@pytest.fixture(scope="module")
def traffic(settings, prometheus) -> None:
    """A photo of every class through the pipeline, and a few empty photos to dead-letter."""
    photos = [(new_photo_id(), path) for path in list_images(DATA / "Test", per_class=1).paths]
    sender = PhotoSender(settings)
    for _ in range(BAD_PHOTOS):
        sender.send_bytes(b"", f"empty-{new_photo_id()[:8]}", "empty.jpg")
    sender.flush()
    result = round_trip(settings, photos, timeout=60)
    assert result.missing() == [], f"{len(result.missing())} of {len(photos)} photos got no prediction"


def panel_queries() -> list[tuple[str, str]]:
    """(where, PromQL) of every target of every dashboard panel."""
    return [
        (f"{path.name} / {panel['title']} / {target['refId']}", target["expr"])
        for path in DASHBOARDS
        for panel in json.loads(path.read_text())["panels"]
        for target in panel["targets"]
    ]


def recording_rules() -> list[tuple[str, str]]:
    rules = yaml.safe_load((PROMETHEUS_DIR / "rules" / "recording.yml").read_text())
    return [(f"recording rule {r['record']}", r["record"]) for g in rules["groups"] for r in g["rules"]]


def test_every_dashboard_panel_and_recording_rule_returns_data(prometheus, traffic):
    queries = panel_queries() + recording_rules()
    assert len(queries) > 20
    empty = dict(queries)
    deadline = time.monotonic() + 60  # rates need two scrapes, recording rules an evaluation
    while empty and time.monotonic() < deadline:
        empty = {where: expr for where, expr in empty.items() if not query(prometheus, expr)}
        if empty:
            time.sleep(1)
    assert not empty, "no data for:\n" + "\n".join(f"  {where}: {expr}" for where, expr in empty.items())


def alerts(url: str) -> list[dict]:
    with urllib.request.urlopen(f"{url}/api/v1/alerts", timeout=10) as response:
        return json.load(response)["data"]["alerts"]


def test_stopping_predict_raises_its_alert(prometheus, services, traffic):
    def predict_down() -> list[dict]:
        return [
            alert for alert in alerts(prometheus)
            if alert["labels"]["alertname"] == "FruitsTargetDown" and alert["labels"].get("service") == "predict"
        ]  # fmt: skip

    assert query(prometheus, 'up{job="fruits", service="predict"} == 1'), "predict is not scraped"
    assert not predict_down()
    assert stop_service(services["predict"]) == 0
    deadline = time.monotonic() + 60
    while not (found := predict_down()) and time.monotonic() < deadline:
        time.sleep(1)
    assert found, f"no FruitsTargetDown alert for predict within 60 s; alerts: {alerts(prometheus)}"
    assert found[0]["state"] in ("pending", "firing")
    assert found[0]["labels"]["severity"] == "critical"

"""Monitoring, proven on a real Prometheus: it scrapes the five services and the gateway
(with the repo's scrape config, retargeted, and its rule files) while photos flow; then
every Grafana panel's PromQL and every recording rule must return data, and stopping
predict must raise its alert. The Spark driver's panels are checked by test_spark_streaming,
where the driver runs."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Iterator

import pytest
import yaml

from tests.integration import as_identity
from core.photos import new_photo_id
from tests.integration.gateway import Gateway, add_user, needs_gateway, sse_first_event, start_gateway, stop_gateway
from tests.integration.prometheus import PROMETHEUS_DIR, panel_queries, report, running_prometheus, without_data
from tools.client import PhotoSender
from tools.roundtrip import round_trip
from core.metrics import STAGE_PORTS
from tools.stack.prometheus_server import query
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
BAD_PHOTOS = 3
GATEWAY_PHOTOS = 6


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


@pytest.fixture(scope="module")
def gateway_port() -> int:
    return free_port_block(1)


@pytest.fixture(scope="module")
def prometheus(services, gateway_port, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    offset = services["ingest"].metrics_port - STAGE_PORTS["ingest"]
    with running_prometheus(
        tmp_path_factory.mktemp("prometheus"),
        lambda service, port: gateway_port if service == "gateway" else port + offset,
    ) as url:
        yield url


@pytest.fixture(scope="module")
def gateway(services, gateway_port, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    running = start_gateway(tmp_path_factory.mktemp("gateway"), gateway_port)
    try:
        yield running
    finally:
        stop_gateway(running)


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


def recording_rules() -> dict[str, str]:
    rules = yaml.safe_load((PROMETHEUS_DIR / "rules" / "recording.yml").read_text())
    return {f"recording rule {r['record']}": r["record"] for g in rules["groups"] for r in g["rules"]}


def test_every_dashboard_panel_and_recording_rule_returns_data(prometheus, traffic):
    queries = panel_queries("services") | recording_rules()
    assert len(queries) > 20
    empty = without_data(prometheus, queries)
    assert not empty, report(empty)


@needs_gateway
def test_gateway_and_feedback_panels_return_data(prometheus, gateway, traffic):
    """Photos through the gateway, one watched on its event stream, and users' verdicts in two
    rounds a few scrapes apart (so that the feedback counters' rates see them grow)."""
    token = add_user(f"monitoring-{uuid.uuid4().hex[:6]}")
    paths = list_images(DATA / "Test", per_class=1).paths[:GATEWAY_PHOTOS]
    photo_ids = [gateway.post_photo(token, path) for path in paths]
    assert sse_first_event(gateway, token, photo_ids[0])["status"] == "done"
    photos = [gateway.wait_done(token, photo_id) for photo_id in photo_ids]
    for _ in range(2):
        for index, photo in enumerate(photos):
            # Half right, half corrected to another type than the predicted one.
            other = "pear" if photo["prediction"]["fruit_type"] == "apple" else "apple"
            gateway.feedback(token, photo["photo_id"], None if index % 2 else other)
        time.sleep(3)
    queries = panel_queries("gateway")
    assert len(queries) >= 8
    empty = without_data(prometheus, queries)
    assert not empty, report(empty) + f"\ngateway log:\n{gateway.log()[-2000:]}"


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

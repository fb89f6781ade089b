"""deploy/prometheus and deploy/grafana: valid for promtool, alerts behave on synthetic
series, dashboards well formed and in step with their generator and the code."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from core.metrics import STAGE_PORTS
from core.settings import PROJECT_ROOT, Settings

PROMETHEUS = PROJECT_ROOT / "deploy" / "prometheus"
GRAFANA = PROJECT_ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
SCRAPE_CONFIGS = [PROMETHEUS / "prometheus.yml", PROMETHEUS / "prometheus-compose.yml"]
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml"))
GATEWAY_PORT = 18080
"""FRUITS_GATEWAY_PORT's default: the gateway serves its /metrics on its own port."""

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool not installed (Debian's prometheus package; `make setup` installs it)",
)


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *map(str, args)], capture_output=True, text=True, cwd=PROMETHEUS, timeout=120)


@needs_promtool
@pytest.mark.parametrize("config", SCRAPE_CONFIGS, ids=lambda p: p.name)
def test_promtool_check_config(config):
    result = promtool("check", "config", config)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_check_rules():
    result = promtool("check", "rules", *RULE_FILES)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_every_alert_fires_on_synthetic_series():
    """deploy/prometheus/tests/alerts_test.yml: promtool's rule unit tests."""
    result = promtool("test", "rules", PROMETHEUS / "tests" / "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", (PROMETHEUS / "tests" / "alerts_test.yml").read_text()))
    assert tested == {rule["alert"] for rule in alert_rules()}


def alert_rules() -> list[dict]:
    rules = yaml.safe_load((PROMETHEUS / "rules" / "alerts.yml").read_text())
    return [rule for group in rules["groups"] for rule in group["rules"]]


def test_the_issues_alerts_exist_with_severity_and_summary():
    rules = {rule["alert"]: rule for rule in alert_rules()}
    for name in ("FruitsTargetDown", "FruitsConsumerLagGrowing", "FruitsDeadLetterRateHigh",
                 "FruitsNoPredictions", "FruitsPcaStale"):  # fmt: skip
        assert name in rules
    for rule in rules.values():
        assert rule["labels"]["severity"] in ("warning", "critical") and rule["annotations"]["summary"]


@pytest.mark.parametrize("config", SCRAPE_CONFIGS, ids=lambda p: p.name)
def test_scrape_configs_scrape_every_service_on_its_port_with_the_rules(config):
    parsed = yaml.safe_load(config.read_text())
    assert sorted(parsed["rule_files"]) == sorted(f"rules/{p.name}" for p in RULE_FILES)
    (job,) = parsed["scrape_configs"]
    assert job["job_name"] == "fruits"
    targets = {group["labels"]["service"]: group["targets"] for group in job["static_configs"]}
    host = "127.0.0.1" if config.name == "prometheus.yml" else None
    expected = {name: [f"{host or name}:{port}"] for name, port in STAGE_PORTS.items()}
    expected["gateway"] = [f"{host or 'gateway'}:{GATEWAY_PORT}"]
    assert targets == expected


def test_dashboards_are_what_the_generator_writes():
    result = subprocess.run([sys.executable, str(GRAFANA / "generate.py"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_dashboards_are_well_formed():
    datasource = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (source,) = datasource["datasources"]
    assert {path.stem for path in DASHBOARDS} == {
        "fruits-pipeline", "fruits-model", "fruits-gateway", "fruits-spark", "fruits-resources"
    }
    uids = set()
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] not in uids
        uids.add(dashboard["uid"])
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        for panel in dashboard["panels"]:
            where = f"{path.name}: {panel['title']}"
            assert panel["datasource"] == {"type": "prometheus", "uid": source["uid"]}, where
            assert panel["targets"], where
            ref_ids = [target["refId"] for target in panel["targets"]]
            assert len(ref_ids) == len(set(ref_ids)), where
            for target in panel["targets"]:
                assert target["expr"].strip() and "$" not in target["expr"].replace("$1", ""), where
            grid = panel["gridPos"]
            assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, where


def test_provisioning_points_at_the_dashboards_folder():
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "fruits.yml").read_text())
    (entry,) = provider["providers"]
    assert entry["type"] == "file" and entry["options"]["path"] == "/var/lib/grafana/dashboards"


def test_readme_documents_every_metric_and_the_metrics_settings():
    readme = (PROJECT_ROOT / "README.md").read_text()
    names = set(re.findall(r'Histogram\(\s*"(\w+)"|Counter\(\s*"(\w+)"|Gauge\(\s*"(\w+)"',
                           (PROJECT_ROOT / "core" / "metrics.py").read_text()))  # fmt: skip
    for name in {n for group in names for n in group if n}:
        assert f"`{name}" in readme, f"README's monitoring section lacks {name}"
    for field in Settings.model_fields:
        if field.startswith("metrics_"):
            assert f"`FRUITS_{field.upper()}`" in readme, field

"""The config the local Prometheus runs, and the replicas' targets file it discovers."""

import json

import yaml

from core.settings import Settings
from tools.stack.prometheus_server import CONFIG, publish_replicas, running_config, targets_dir


def test_the_running_config_adds_discovery_to_the_services_job_and_keeps_the_rest(tmp_path):
    settings = Settings(state_dir=tmp_path)
    written = yaml.safe_load(running_config(settings, CONFIG).read_text())
    original = yaml.safe_load(CONFIG.read_text())
    (services,) = [job for job in written["scrape_configs"] if job["job_name"] == "fruits"]
    assert services["file_sd_configs"] == [{"files": [str(targets_dir(settings) / "*.json")]}]
    assert services["static_configs"] == next(
        job["static_configs"] for job in original["scrape_configs"] if job["job_name"] == "fruits"
    )
    assert all("file_sd_configs" not in job for job in written["scrape_configs"] if job["job_name"] != "fruits")
    # Rule files resolve as they did beside the original, wherever the written config lies.
    assert written["rule_files"] == [str(CONFIG.parent / path) for path in original["rule_files"]]
    assert all((CONFIG.parent / path).is_file() for path in original["rule_files"])


def test_published_replicas_are_the_ones_beyond_each_services_first(tmp_path):
    settings = Settings(state_dir=tmp_path)
    path = publish_replicas(settings, [("predict", 0, 9105), ("featurize", 2, 9123), ("featurize", 1, 9113)])
    assert json.loads(path.read_text()) == [
        {"targets": ["127.0.0.1:9113"], "labels": {"service": "featurize"}},
        {"targets": ["127.0.0.1:9123"], "labels": {"service": "featurize"}},
    ]
    publish_replicas(settings, [])
    assert json.loads(path.read_text()) == []
    assert [p.name for p in targets_dir(settings).iterdir()] == [path.name]  # no partial file left behind

"""docker-compose.yml agrees with the code: no Docker engine runs here, so this is what
keeps it from rotting — commands, FRUITS_* names, metrics ports, mounted paths and the
Prometheus targets are checked against the repository."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import pytest
import yaml

from core.metrics import STAGE_PORTS
from core.settings import PIPELINE_SERVICES as SERVICES
from core.settings import PROJECT_ROOT, Settings

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
COMPOSE = yaml.safe_load(COMPOSE_FILE.read_text())
SERVICES_OF_COMPOSE = COMPOSE["services"]
BUILT = {name: service for name, service in SERVICES_OF_COMPOSE.items() if "build" in service}


def bind_mounts(service: dict) -> dict[str, str]:
    """Container path → repository path of the service's ./ bind mounts."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            mounts[target] = source
    return mounts


def repo_path(service: dict, container_path: str) -> Path:
    """The repository file behind ``container_path`` through the service's bind mounts."""
    for target, source in bind_mounts(service).items():
        path = PurePosixPath(container_path)
        if path == PurePosixPath(target) or PurePosixPath(target) in path.parents:
            return PROJECT_ROOT / source / path.relative_to(target)
    raise AssertionError(f"{container_path} is not mounted from the repository")


def test_the_stack_is_complete():
    assert {"kafka", "s3", *SERVICES, "spark", "prometheus", "grafana"} <= set(SERVICES_OF_COMPOSE)
    assert SERVICES_OF_COMPOSE["kafka"]["image"].startswith("apache/kafka:")
    assert SERVICES_OF_COMPOSE["s3"]["image"].startswith("chrislusf/seaweedfs:")
    assert (PROJECT_ROOT / "Dockerfile").is_file()
    assert all(service["build"] == "." for service in BUILT.values())


@pytest.mark.parametrize("name", sorted(BUILT))
def test_commands_run_modules_that_exist(name):
    command = BUILT[name]["command"]
    if command[0] == "fruits":  # the console script
        from tools.cli import main  # noqa: F401  (it exists)

        return
    assert command[:2] == ["python", "-m"], command
    module = command[2]
    if module.startswith("spark.") and not (PROJECT_ROOT / "spark").is_dir():
        pytest.skip("the Spark job (issue 3) is not in the repository yet")
    # What `python -m` runs: the module's file, or a package's __main__ (found without
    # importing it, so a module needing pyspark is checked without pyspark).
    path = PROJECT_ROOT.joinpath(*module.split("."))
    assert path.with_suffix(".py").is_file() or (path / "__main__.py").is_file(), f"{name}: no module {module}"
    if name in SERVICES:
        assert module == f"services.{name}"


def test_every_fruits_variable_is_a_setting():
    names = set(re.findall(r"\bFRUITS_[A-Z0-9_]+\b", COMPOSE_FILE.read_text()))
    fields = {f"FRUITS_{field.upper()}" for field in Settings.model_fields}
    names -= {"FRUITS_DATA"}  # compose's own variable: where the training data is on the host
    assert names and names <= fields, names - fields
    for name, service in BUILT.items():
        environment = service.get("environment", {})
        assert environment.get("FRUITS_KAFKA_BOOTSTRAP_SERVERS") == "kafka:9092", name
        assert environment.get("FRUITS_S3_ENDPOINT_URL") == "http://s3:8333", name


def test_services_serve_metrics_on_their_stage_port_on_all_interfaces():
    for name, port in STAGE_PORTS.items():
        service = SERVICES_OF_COMPOSE[name]
        assert int(service["environment"]["FRUITS_METRICS_PORT"]) == port
        assert service["environment"]["FRUITS_METRICS_HOST"] == "0.0.0.0"
        assert str(port) in service["expose"]


def test_mounted_paths_exist_in_the_repository():
    mounts = [(name, source) for name, service in SERVICES_OF_COMPOSE.items()
              for source in bind_mounts(service).values()]  # fmt: skip
    assert mounts
    for name, source in mounts:
        assert (PROJECT_ROOT / source).exists(), f"{name} mounts {source}, which does not exist"


def test_prometheus_scrapes_the_compose_services_with_the_mounted_config():
    prometheus = SERVICES_OF_COMPOSE["prometheus"]
    (config_flag,) = [arg for arg in prometheus["command"] if arg.startswith("--config.file=")]
    config_path = repo_path(prometheus, config_flag.split("=", 1)[1])
    config = yaml.safe_load(config_path.read_text())
    for rule_file in config["rule_files"]:
        assert (config_path.parent / rule_file).is_file(), rule_file
    targets = {
        target: group["labels"]["service"]
        for job in config["scrape_configs"]
        for group in job["static_configs"]
        for target in group["targets"]
    }
    expected = {f"{name}:{SERVICES_OF_COMPOSE[name]['environment']['FRUITS_METRICS_PORT']}": name for name in STAGE_PORTS}
    assert targets == expected


def test_grafana_gets_the_provisioning_and_the_dashboards_where_the_provider_looks():
    grafana = SERVICES_OF_COMPOSE["grafana"]
    provisioning = repo_path(grafana, "/etc/grafana/provisioning")
    assert provisioning == PROJECT_ROOT / "deploy/grafana/provisioning"
    provider = yaml.safe_load((provisioning / "dashboards" / "fruits.yml").read_text())["providers"][0]
    dashboards = repo_path(grafana, provider["options"]["path"])
    assert sorted(dashboards.glob("*.json")), dashboards
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert repo_path(grafana, home).is_file()
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090"

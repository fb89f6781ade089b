"""docker-compose.yml agrees with the code: no Docker engine runs here, so this is what
keeps it from rotting — commands, FRUITS_* names, metrics ports, mounted paths, the
Prometheus targets, the broker's size limit, the topic topology, the Spark image
(deploy/spark/Dockerfile) and the gateway (its port, its store's volume, its assets in the
image, the README's way to add users) are checked against the repository."""

from __future__ import annotations

import fnmatch
import re
import shlex
import tomllib
from pathlib import Path, PurePosixPath

import pytest
import yaml

from core.limits import size_limits
from core.metrics import STAGE_PORTS
from core.settings import PIPELINE_SERVICES as SERVICES
from core.settings import PROJECT_ROOT, Settings

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
COMPOSE = yaml.safe_load(COMPOSE_FILE.read_text())
SERVICES_OF_COMPOSE = COMPOSE["services"]
BUILT = {name: service for name, service in SERVICES_OF_COMPOSE.items() if "build" in service}
SPARK_DOCKERFILE = "deploy/spark/Dockerfile"


def dockerfile_of(service: dict) -> Path:
    build = service["build"]
    if isinstance(build, str):
        return PROJECT_ROOT / build / "Dockerfile"
    return PROJECT_ROOT / build.get("context", ".") / build.get("dockerfile", "Dockerfile")


def dockerfile_stages(path: Path) -> list[list[str]]:
    """The instructions of each build stage (continuation lines joined, comments dropped)."""
    text = re.sub(r"\\\n", " ", path.read_text())
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages


def settings_of(service: dict) -> Settings:
    """The service's Settings from its compose environment alone, not this shell's (YAML
    already types the values; model_construct fills in the defaults)."""
    fields = {
        name.removeprefix("FRUITS_").lower(): value
        for name, value in service.get("environment", {}).items()
        if name.startswith("FRUITS_")
    }
    return Settings.model_construct(**fields)


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
    assert {"kafka", "s3", *SERVICES, "gateway", "spark", "prometheus", "grafana"} <= set(SERVICES_OF_COMPOSE)
    assert SERVICES_OF_COMPOSE["kafka"]["image"].startswith("apache/kafka:")
    assert SERVICES_OF_COMPOSE["s3"]["image"].startswith("chrislusf/seaweedfs:")
    assert (PROJECT_ROOT / "Dockerfile").is_file()
    assert all(service["build"] == "." for name, service in BUILT.items() if name != "spark")


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
    expected[f"gateway:{settings_of(SERVICES_OF_COMPOSE['gateway']).gateway_port}"] = "gateway"  # its own port
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


def test_the_broker_takes_a_dead_letter_of_the_largest_record():
    # One definition of the limits (core.limits): the broker's is the dead-letter limit.
    limits = size_limits(settings_of(SERVICES_OF_COMPOSE["provision"]))
    assert int(SERVICES_OF_COMPOSE["kafka"]["environment"]["KAFKA_MESSAGE_MAX_BYTES"]) == limits.dead_letter_bytes
    assert limits.dead_letter_bytes == 4 * 1024 * 1024  # with the default FRUITS_MAX_RECORD_BYTES


def test_every_service_has_the_same_size_limits():
    limits = {name: size_limits(settings_of(service)) for name, service in BUILT.items()}
    assert len(set(limits.values())) == 1, limits


def test_provision_creates_topics_the_single_broker_can_hold():
    from tools.provision import plan_topics
    from tools.stack.__main__ import main

    provision = SERVICES_OF_COMPOSE["provision"]
    command = provision["command"]
    assert command == ["python", "-m", "tools.stack", "provision"], command  # starts nothing, only provisions
    with pytest.raises(SystemExit) as help_exit:
        main([*command[3:], "--help"])
    assert help_exit.value.code == 0
    brokers = [name for name, service in SERVICES_OF_COMPOSE.items() if service.get("image", "").startswith("apache/kafka:")]
    settings = settings_of(provision)
    specs = plan_topics(settings, broker_count=len(brokers))  # raises if the cluster cannot hold them
    assert {spec.replication_factor for spec in specs} == {1}
    assert {spec.config["min.insync.replicas"] for spec in specs} == {"1"}
    broker = SERVICES_OF_COMPOSE["kafka"]["environment"]
    assert broker["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"  # topics come from provision only


def test_spark_runs_in_its_own_image_with_java_17_the_spark_extra_and_the_jars():
    spark = SERVICES_OF_COMPOSE["spark"]
    dockerfile = dockerfile_of(spark)
    assert dockerfile == PROJECT_ROOT / SPARK_DOCKERFILE and dockerfile.is_file()
    assert spark["image"] != SERVICES_OF_COMPOSE["ingest"]["image"], "the services' image has no Java"
    *build_stages, final = dockerfile_stages(dockerfile)
    final_text = "\n".join(final)
    # Java 17 in the image that runs the job (pyspark 4 starts a JVM)
    assert re.search(r"apt-get install .*\bopenjdk-17-(jre|jdk)(-headless)?\b", final_text), final_text
    java_home = re.search(r"JAVA_HOME=(\S+)", final_text)
    assert java_home and "17" in java_home.group(1)
    # the spark extra, at the locked versions
    (install,) = [line for line in final if line.startswith("RUN ") and "pip install" in line]
    assert re.search(r"\.\[([a-z,]*,)?spark(,[a-z,]*)?\]", install), install
    assert "-c requirements/lock.txt" in install or "-r requirements/lock.txt" in install, install
    assert (PROJECT_ROOT / "requirements" / "lock.txt").is_file()
    # the jars, resolved by Maven from the Spark pom in a build stage, copied where the job looks
    jars_dir = PurePosixPath(spark["environment"]["FRUITS_SPARK_JARS_DIR"])
    copies = [line.split() for line in final if line.startswith("COPY --from=")]
    assert [PurePosixPath(words[-1]) for words in copies] == [jars_dir], copies
    stage_name = copies[0][1].removeprefix("--from=")
    (stage,) = [stage for stage in build_stages if stage[0].split()[-1] == stage_name]
    assert "17" in stage[0], stage[0]  # Maven on a JDK 17
    (copy_pom,) = [line.split() for line in stage if line.startswith("COPY ")]
    assert copy_pom[1] == "deploy/spark/pom.xml" and (PROJECT_ROOT / copy_pom[1]).is_file()
    (mvn,) = [line for line in stage if line.startswith("RUN ") and "mvn " in line]
    assert "dependency:copy-dependencies" in mvn
    output = re.search(r"-DoutputDirectory=(\S+)", mvn).group(1)
    assert PurePosixPath(copies[0][2]) == PurePosixPath(output), (copies[0], output)
    image_default = re.search(r"\bFRUITS_SPARK_JARS_DIR=(\S+)", final_text)
    assert image_default is None or PurePosixPath(image_default.group(1)) == jars_dir
    # the command's module exists and is the streaming job
    command = spark["command"]
    assert command == ["python", "-m", "spark.streaming_job"], command
    assert (PROJECT_ROOT / "spark" / "streaming_job.py").is_file()


def test_the_gateway_listens_on_all_interfaces_on_its_published_port():
    gateway = SERVICES_OF_COMPOSE["gateway"]
    assert gateway["command"] == ["python", "-m", "services.gateway"]
    assert gateway["image"] == SERVICES_OF_COMPOSE["ingest"]["image"]  # the services' image
    assert dockerfile_of(gateway) == PROJECT_ROOT / "Dockerfile"
    assert gateway["depends_on"] == {"provision": {"condition": "service_completed_successfully"}}
    settings = settings_of(gateway)
    assert settings.gateway_host == "0.0.0.0"  # the default, 127.0.0.1, is unreachable from outside the container
    (published,) = gateway["ports"]
    host_ip, _, container_port = published.split(":")
    assert int(container_port) == settings.gateway_port
    assert host_ip == "127.0.0.1"  # plain HTTP, like the rest of the stack here


def test_the_gateway_store_is_on_a_named_volume_the_image_user_owns():
    gateway = SERVICES_OF_COMPOSE["gateway"]
    url = settings_of(gateway).gateway_database()
    assert url.startswith("sqlite:////"), url  # an absolute path, not the state dir in /tmp
    database = PurePosixPath(url.removeprefix("sqlite:///"))
    volumes = dict(volume.split(":")[:2][::-1] for volume in gateway["volumes"])  # target → source
    (target,) = [target for target in volumes if PurePosixPath(target) in database.parents]
    assert volumes[target] in COMPOSE["volumes"], "a named volume, kept across `docker compose down`"
    # A new named volume takes the owner of the image's directory: the Dockerfile must make it
    # the user the image runs as, or SQLite cannot create its file.
    (final,) = dockerfile_stages(dockerfile_of(gateway))
    (user,) = [line.split()[1] for line in final if line.upper().startswith("USER ")]
    run = "\n".join(line for line in final if line.startswith("RUN "))
    assert re.search(rf"\bmkdir -p (\S+ )*{re.escape(target)}\b", run), run
    assert re.search(rf"\bchown {re.escape(user)}:?\S* (\S+ )*{re.escape(target)}\b", run), run


def test_the_gateway_page_and_swagger_assets_are_in_the_image():
    from services.gateway.app import STATIC_DIR

    static = sorted(path for path in STATIC_DIR.rglob("*") if path.is_file())
    assert STATIC_DIR / "index.html" in static
    # The image copies the checkout and installs it editable: the page is found next to the code…
    (final,) = dockerfile_stages(PROJECT_ROOT / "Dockerfile")
    assert "COPY . ." in final
    (install,) = [line for line in final if line.startswith("RUN ") and "pip install" in line]
    assert re.search(r"pip install .*-e \.(\s|$)", install), install
    # … unless .dockerignore leaves it out (fnmatch's * also crosses /: it errs on the safe side).
    ignored = [line.strip() for line in (PROJECT_ROOT / ".dockerignore").read_text().splitlines()]
    patterns = [line for line in ignored if line and not line.startswith("#")]
    for path in static:
        relative = path.relative_to(PROJECT_ROOT)
        for part in [relative, *relative.parents[:-1]]:
            assert not any(fnmatch.fnmatch(part.as_posix(), pattern) for pattern in patterns), (part, patterns)
    # A non-editable install keeps the page too; Swagger UI's assets are a dependency, not an
    # extra (the image installs none).
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    package_data = project["tool"]["setuptools"]["package-data"]["services.gateway"]
    assert all(any(fnmatch.fnmatch(path.relative_to(STATIC_DIR.parent).as_posix(), glob) for glob in package_data)
               for path in static)  # fmt: skip
    assert any(re.match(r"swagger-ui-bundle\b", dependency) for dependency in project["project"]["dependencies"])


def test_the_readme_adds_gateway_users_in_compose_with_the_gateways_store():
    from tools.cli import build_parser, cmd_users

    readme = (PROJECT_ROOT / "README.md").read_text()
    docker = readme.split("### With Docker", 1)[1].split("\n## ", 1)[0]
    (line,) = [line for line in docker.splitlines() if line.startswith("docker compose run --rm gateway ")]
    words = shlex.split(line.split("#", 1)[0])
    assert words[:5] == ["docker", "compose", "run", "--rm", "gateway"]
    assert words[5] == "fruits"  # the console script, in the image's PATH
    args = build_parser().parse_args(words[6:])
    assert args.func is cmd_users and args.action == "add" and args.name
    gateway = settings_of(SERVICES_OF_COMPOSE["gateway"])
    assert args.region is None or args.region in gateway.region_buckets

"""Faults on the real stack (issue 10): photos stream at a steady rate, a few of them invalid,
while a replica, the broker or S3 is taken away, or a record triggers a bug. Each test asserts
that in the end every valid photo got exactly one prediction and every invalid one exactly one
dead letter: nothing lost, nothing duplicated, no valid photo dead-lettered.

The waits are for eventual delivery and generous (a loaded machine is slow); `make faults`
measures how fast the recovery is."""

from __future__ import annotations

import signal
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.datasets import list_images
from core.errors import Reason
from core.settings import PIPELINE_SERVICES, PROJECT_ROOT, Settings
from tests.integration import as_identity
from tests.integration import poisoned_predict
from tools.client import PhotoSender, new_photo_id
from tools.services import ServiceProcess, free_port_offset, start_service, stop_services, supervised, wait_ready
from tools.stack import kafka_server, kill_server, restart_server, seaweedfs_server, stop_server
from tools.stack.supervisor import our_pid
from tools.traffic import PREDICTION, Traffic

pytestmark = pytest.mark.integration

DATA = PROJECT_ROOT.parent / "shared" / "data" / "fruits360"
RATE = 20.0
"""Photos per second: steady, and well below what the machine can do even when loaded."""
INVALID_EVERY = 25
"""One photo in this many is cut in half: ingest must dead-letter it."""
DELIVERY_TIMEOUT = 300.0
"""How long after the fault every photo may take to be answered (eventual delivery, not speed)."""


@pytest.fixture(scope="module")
def photos() -> list[Path]:
    return list_images(DATA / "Test", per_class=2).paths


@pytest.fixture
def client(trained: Settings) -> Settings:
    return as_identity(trained, "client")


def own_server(settings: Settings, name: str) -> None:
    if our_pid(settings, name) is None:
        pytest.skip(f"{name} is an existing server (given in the environment): this test stops only its own")


def wait_sent(traffic: Traffic, count: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while len(traffic.sent_at) < count:
        traffic.check()
        assert time.monotonic() < deadline, f"only {len(traffic.sent_at)} photos sent in {timeout:.0f} s"
        time.sleep(0.1)


def assert_exactly_once(traffic: Traffic) -> None:
    answered = traffic.wait_answered(DELIVERY_TIMEOUT)
    tally = traffic.tally()
    assert answered, f"{len(tally.lost)} photos still unanswered {DELIVERY_TIMEOUT:.0f} s on: {tally.summary()}"
    assert tally.exactly_once, f"{tally.summary()}; wrongly answered: {dict(list(tally.wrong.items())[:5])}"
    assert sum(answer != PREDICTION for answer in traffic.expected.values()) >= 2  # invalid photos were among them


def metric(service: ServiceProcess, name: str, **labels: str) -> float:
    """A counter's value on the service's /metrics (0 if it has no such sample yet)."""
    assert service.metrics_port is not None
    text = urllib.request.urlopen(f"http://127.0.0.1:{service.metrics_port}/metrics", timeout=5).read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def test_replicas_share_the_work_and_one_of_each_killed_mid_stream(trained, client, photos, tmp_path):
    """Two replicas of featurize and of predict (`fruits services --replicas`) and a third
    featurize started with default settings: it takes a free slot instead of fencing one that is
    taken. Then one replica of each is SIGKILLed and the supervisor starts it again on its slot."""
    lines: list[str] = []
    replicas = {"featurize": 2, "predict": 2}
    with supervised(tmp_path, free_port_offset(200), replicas, report=lines.append) as supervisor:
        with Traffic(client, trained, photos, RATE, invalid_every=INVALID_EVERY) as traffic:
            wait_sent(traffic, 40)
            # No FRUITS_INSTANCE_ID, no /metrics (its port would be the first replica's).
            third = start_service("featurize", tmp_path / "third", {"FRUITS_METRICS_ENABLED": "false"})
            try:
                wait_ready(third)
                wait_sent(traffic, 100)
                for victim in ("featurize-1", "predict-1"):
                    supervisor.services[victim].process.send_signal(signal.SIGKILL)
                time.sleep(5)
                traffic.stop_sending()
                assert_exactly_once(traffic)
                assert third.process.poll() is None, "the third featurize exited"
            finally:
                stop_services({"third": third})
        assert "fruits.features as instance 2" in third.log_path.read_text()
        assert supervisor.exits == {"featurize-1": 1, "predict-1": 1}, lines
        assert supervisor.restarts == {"featurize-1": 1, "predict-1": 1}, lines


def test_a_poison_record_is_dead_lettered_once_and_the_stage_goes_on(trained, client, photos, tmp_path):
    """A record that makes predict's transform raise is tried, then dead-lettered as
    internal_error; the stage neither exits nor stops answering the others."""
    poison_id = f"poison-{new_photo_id()[:8]}"
    offset = free_port_offset(200)
    services: dict[str, ServiceProcess] = {}
    try:
        for name in PIPELINE_SERVICES:
            module = "tests.integration.poisoned_predict" if name == "predict" else None
            env = {poisoned_predict.ENV: poison_id}
            services[name] = start_service(name, tmp_path, env, offset, slot=0, module=module)
        for service in services.values():
            wait_ready(service)
        with Traffic(client, trained, photos, RATE, count=120, invalid_every=INVALID_EVERY) as traffic:
            wait_sent(traffic, 60)
            sender = PhotoSender(client)
            sender.send_file(photos[0], poison_id)
            traffic.expect(poison_id, Reason.INTERNAL_ERROR.value)
            sender.flush()
            assert_exactly_once(traffic)
        assert services["predict"].process.poll() is None, "predict exited"
        assert metric(services["predict"], "fruits_retries_total", stage="predict", cause="transform") >= 1
    finally:
        stop_services(services)


def test_the_broker_sigkilled_mid_stream_and_restarted(trained, client, photos, tmp_path):
    """Services wait for the broker (or exit and are started again); nothing is lost or
    duplicated across the crash."""
    own_server(trained, kafka_server.NAME)
    lines: list[str] = []
    with supervised(tmp_path, free_port_offset(200), report=lines.append):
        with Traffic(client, trained, photos, RATE, count=400, invalid_every=INVALID_EVERY) as traffic:
            wait_sent(traffic, 120)
            kill_server(trained, kafka_server.NAME)
            time.sleep(2)  # a crash, not a blink
            restart_server(trained, kafka_server.NAME)
            assert_exactly_once(traffic)


def test_s3_stopped_30_s_mid_stream_and_restarted(trained, client, photos, tmp_path):
    """Through a 30-s S3 outage no service exits: they wait with backoff (counted in
    fruits_retries_total, cause dependency, and logged), then every photo is answered."""
    own_server(trained, seaweedfs_server.NAME)
    lines: list[str] = []
    with supervised(tmp_path, free_port_offset(200), report=lines.append) as supervisor:
        with Traffic(client, trained, photos, RATE, invalid_every=INVALID_EVERY) as traffic:
            wait_sent(traffic, 100)
            stop_server(trained, seaweedfs_server.NAME)
            time.sleep(30)
            assert not supervisor.exits, lines
            restart_server(trained, seaweedfs_server.NAME)
            time.sleep(3)
            traffic.stop_sending()
            assert_exactly_once(traffic)
        ingest = supervisor.services["ingest"]
        assert not supervisor.exits, lines
        assert metric(ingest, "fruits_retries_total", stage="ingest", cause="dependency") >= 1
        assert "ingest: S3 is unavailable" in ingest.log_path.read_text()

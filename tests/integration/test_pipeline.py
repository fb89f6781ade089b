"""The five services on real Kafka and real SeaweedFS: photos in, predictions out,
bad input dead-lettered, and no loss or duplication when a service is SIGKILLed."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timezone

import pytest

from core.avro import DEAD_LETTER, PHOTO_EVENT, avro_type
from core.hops import parse as parse_hops
from core.records import PhotoEvent, Prediction, decode_record, encode_record
from core.photos import new_photo_id
from tools.client import PhotoSender, PredictionReader
from tools.roundtrip import round_trip
from core.settings import PIPELINE_SERVICES as SERVICES
from tools.services import ServiceProcess, start_service, start_services, stop_services, wait_ready
from core.s3 import s3_client
from core.settings import PROJECT_ROOT, Settings
from core.datasets import list_images
from tests import images
from tests.integration import as_identity

pytestmark = pytest.mark.integration

DATA = PROJECT_ROOT.parent / "shared" / "data" / "fruits360"
METRICS_PORT_OFFSET = 100  # leaves the default ports to a demo running beside the tests


@pytest.fixture(scope="module")
def settings(trained: Settings) -> Settings:
    """As admin: the operator who checks originals and dead letters."""
    return trained


@pytest.fixture(scope="module")
def client(trained: Settings) -> Settings:
    """As ``client``: who sends photos and reads predictions (tools.client)."""
    return as_identity(trained, "client")


@pytest.fixture(scope="module")
def services(settings: Settings, tmp_path_factory: pytest.TempPathFactory):
    running = start_services(tmp_path_factory.mktemp("logs"), port_offset=METRICS_PORT_OFFSET)
    yield running
    stop_services(running)
    for service in running.values():
        assert service.process.returncode == 0, f"{service.name} did not stop cleanly: {service.log_path}"


def test_photo_from_cli_gets_exactly_one_right_prediction(settings, client, services):
    photo = sorted((DATA / "Test" / "Banana 1").iterdir())[0]
    reader = PredictionReader(client)
    try:
        produced = subprocess.run(
            [sys.executable, "-m", "tools.cli", "produce", "--print-ids", "--quiet", str(photo)],
            capture_output=True, text=True, timeout=60, check=True,
        )
        photo_id = produced.stdout.split("\t")[0].strip()
        assert len(photo_id) == 32, produced.stdout
        # Generous: the first photo into a fresh SeaweedFS bucket waits for its volumes to grow.
        message = next((m for m in reader.messages(timeout=90) if m.key() == photo_id.encode()), None)
        assert message is not None, "no prediction within 90 s"
        found = [decode_record(Prediction, message.value())]
        # Keep listening a little: a duplicate would arrive right behind the first.
        found += [p for p in reader.predictions(timeout=3) if p.photo.photo_id == photo_id]
    finally:
        reader.close()
    assert len(found) == 1
    prediction = found[0]
    assert prediction.label == "Banana 1"
    # Every stage stamped its hop, in path order, each after the previous one.
    source, hops = parse_hops(message.headers())
    assert [hop.stage for hop in hops] == list(SERVICES)
    times = [source, *(t for hop in hops for t in (hop.received, hop.processed, hop.produced))]
    assert times == sorted(times), times
    assert abs(hops[-1].produced - message.timestamp()[1] / 1000) < 1.0
    assert prediction.top5[0].label == "Banana 1" and len(prediction.top5) == 5
    assert "banana" in prediction.fruit.common_name.lower()
    assert prediction.model_versions.pca_version == prediction.model_versions.classifier_version
    assert prediction.photo.original_uri.startswith(f"s3://{settings.region_buckets['eu']}/originals/")
    bucket, key = prediction.photo.original_uri[5:].split("/", 1)
    assert s3_client(settings).get_object(Bucket=bucket, Key=key)["Body"].read() == photo.read_bytes()


# A well-formed single-object record of a schema the photos topic does not accept.
FOREIGN_RECORD = avro_type(DEAD_LETTER).encode(
    {"source_topic": "x", "source_partition": 0, "source_offset": 0, "stage": "x", "error_class": "x",
     "error_message": "x", "photo_id": None, "failed_at": datetime(2026, 1, 1, tzinfo=timezone.utc),
     "original_key": None, "original_value": None}
)


def test_bad_inputs_are_dead_lettered_and_good_ones_still_predicted(settings, client, services):
    good_photos = [sorted((DATA / "Test" / label).iterdir())[0] for label in ("Kiwi 1", "Lemon 1", "Strawberry 1")]
    bad = {
        "corrupt_jpeg": (images.corrupt_jpeg(), "undecodable_image"),
        "truncated_jpeg": (images.truncated_jpeg(), "undecodable_image"),
        "zero_bytes": (b"", "empty_image"),
        "pdf": (images.PDF, "unsupported_type"),
        "huge_png": (images.huge_png(), "image_too_large"),
    }
    predictions = PredictionReader(client)
    dead_letters = PredictionReader(settings, topic=settings.topic_dead_letter)  # admin's alone
    sender = PhotoSender(client)
    try:
        expected_dead: dict[str, str] = {}
        good_ids = [sender.send_file(good_photos[0])]
        for name, (data, reason) in bad.items():
            # As another producer would send them: our own client refuses what it cannot strip.
            photo_id = f"{name}-{new_photo_id()[:8]}"
            sender.send_raw(photo_id, encode_record(PhotoEvent(
                photo_id=photo_id, user_id="u", captured_at=datetime.now(timezone.utc), region="eu",
                content_type=None, image=data, image_uri=None)))  # fmt: skip
            expected_dead[photo_id] = reason
            if name == "pdf":
                good_ids.append(sender.send_file(good_photos[1]))
        foreign_id = f"foreign-{new_photo_id()[:8]}"
        sender.send_raw(foreign_id, FOREIGN_RECORD)
        expected_dead[foreign_id] = "foreign_schema"
        # Another producer may inline a photo far over our inline limit: its dead letter
        # must still carry the whole record.
        oversized_id = f"oversized-{new_photo_id()[:8]}"
        oversized_event = avro_type(PHOTO_EVENT).encode(
            {"photo_id": oversized_id, "user_id": "u", "captured_at": datetime.now(timezone.utc), "region": "eu",
             "content_type": "image/jpeg", "image": b"\xff\xd8\xff" + bytes(1_900_000), "image_uri": None}
        )
        sender.send_raw(oversized_id, oversized_event)
        expected_dead[oversized_id] = "undecodable_image"
        good_ids.append(sender.send_file(good_photos[2]))
        sender.flush()

        letters: dict[str, list[dict]] = {}
        deadline = time.monotonic() + 60
        while set(letters) < set(expected_dead) and time.monotonic() < deadline:
            for msg in dead_letters.messages(timeout=5):
                letter = avro_type(DEAD_LETTER).decode(msg.value())
                letters.setdefault(msg.key().decode(), []).append(letter)
        got = Counter(p.photo.photo_id for p in predictions.predictions(timeout=15))
        got += Counter(p.photo.photo_id for p in predictions.predictions(timeout=3))
    finally:
        predictions.close()
        dead_letters.close()

    for photo_id, reason in expected_dead.items():
        assert len(letters.get(photo_id, [])) == 1, f"{photo_id}: {letters.get(photo_id)}"
        letter = letters[photo_id][0]
        assert (letter["stage"], letter["error_class"]) == ("ingest", reason), letter
        assert letter["error_message"] and letter["source_topic"] == settings.topic_photos
        assert letter["original_value"] is not None and letter["original_key"] == photo_id.encode()
    assert letters[foreign_id][0]["original_value"] == FOREIGN_RECORD
    assert letters[oversized_id][0]["original_value"] == oversized_event
    assert {photo_id: got[photo_id] for photo_id in good_ids} == {photo_id: 1 for photo_id in good_ids}
    assert not any(got[photo_id] for photo_id in expected_dead)


def collect(reader: PredictionReader, wanted: set[str], timeout: float = 60) -> dict[str, list]:
    """Records of ``reader``'s topic keyed by photo id, until every wanted id came (and a
    little longer, for duplicates) or ``timeout`` passed."""
    got: dict[str, list] = {}
    deadline = time.monotonic() + timeout
    while not wanted <= set(got) and time.monotonic() < deadline:
        for msg in reader.messages(timeout=3):
            got.setdefault(msg.key().decode(), []).append(msg.value())
    for msg in reader.messages(timeout=3):
        got.setdefault(msg.key().decode(), []).append(msg.value())
    return got


def test_users_cannot_reach_or_overwrite_each_others_photos(settings, client, services):
    """Issue 9's findings: confused deputy through image_uri, global photo ids, no field limits."""
    photos = [sorted((DATA / "Test" / label).iterdir())[0] for label in ("Kiwi 1", "Lemon 1")]
    alice, bob = PhotoSender(client, "eu", "alice"), PhotoSender(client, "eu", "bob")  # a trusted producer
    s3 = s3_client(settings)
    us_bucket = settings.region_buckets["us"]
    private = b"private model pointer " + new_photo_id().encode()
    s3.put_object(Bucket=us_bucket, Key="originals/carol/secret", Body=images.jpeg())
    s3.put_object(Bucket=settings.model_bucket, Key="private-probe.json", Body=private)
    predictions = PredictionReader(client)
    dead_letters = PredictionReader(settings, topic=settings.topic_dead_letter)
    try:
        shared_id = f"shared-{new_photo_id()[:8]}"
        alice.send_file(photos[0], shared_id)
        alice.flush()
        first = collect(predictions, {shared_id})
        assert len(first.get(shared_id, [])) == 1
        bob.send_file(photos[1], shared_id)  # the same id, another user: another object
        alice.send_file(photos[0], shared_id)  # a replay
        alice.send_file(photos[1], shared_id)  # another image under alice's used id
        forbidden = {
            f"deputy-us-{new_photo_id()[:8]}": f"s3://{us_bucket}/originals/carol/secret",
            f"deputy-models-{new_photo_id()[:8]}": f"s3://{settings.model_bucket}/private-probe.json",
            f"deputy-bob-{new_photo_id()[:8]}": f"s3://{settings.region_buckets['eu']}/uploads/bob/x.jpg",
        }
        for photo_id, uri in forbidden.items():
            alice.send_raw(photo_id, avro_type(PHOTO_EVENT).encode(
                {"photo_id": photo_id, "user_id": "alice", "captured_at": datetime.now(timezone.utc),
                 "region": "eu", "content_type": None, "image": None, "image_uri": uri}))
        long_user_id = f"long-user-{new_photo_id()[:8]}"
        alice.send_raw(long_user_id, avro_type(PHOTO_EVENT).encode(
            {"photo_id": long_user_id, "user_id": "u" * 1_000_000, "captured_at": datetime.now(timezone.utc),
             "region": "eu", "content_type": None, "image": images.jpeg(), "image_uri": None}))
        for sender in (alice, bob):
            sender.flush()
        letters = collect(dead_letters, {shared_id, *forbidden, long_user_id})
        later = collect(predictions, {shared_id}, timeout=20)
    finally:
        predictions.close()
        dead_letters.close()

    decoded = {key: [avro_type(DEAD_LETTER).decode(value) for value in values] for key, values in letters.items()}
    assert sorted(letter["error_class"] for letter in decoded[shared_id]) == ["duplicate_event", "duplicate_photo_id"]
    for photo_id in forbidden:
        (letter,) = decoded[photo_id]
        assert letter["error_class"] == "forbidden_image_uri", letter
        assert private.decode() not in letter["error_message"]
    assert [letter["error_class"] for letter in decoded[long_user_id]] == ["bad_user_id"]
    assert len(decoded[long_user_id][0]["error_message"]) < 1_000
    # bob's photo got its own prediction; alice's got none beyond her first
    users = [decode_record(Prediction, value).photo.user_id for value in later[shared_id]]
    assert users == ["bob"]
    eu = settings.region_buckets["eu"]
    stored = {user: s3.get_object(Bucket=eu, Key=f"originals/{user}/{shared_id}")["Body"].read()
              for user in ("alice", "bob")}
    assert stored == {"alice": photos[0].read_bytes(), "bob": photos[1].read_bytes()}
    assert not s3.list_objects_v2(Bucket=eu, Prefix="originals/alice/deputy-").get("KeyCount")


def restart(services: dict[str, ServiceProcess], name: str) -> None:
    old = services[name]
    services[name] = start_service(name, old.log_path.parent, port_offset=METRICS_PORT_OFFSET)
    wait_ready(services[name])


@pytest.mark.parametrize("victim", SERVICES)
def test_sigkill_mid_stream_loses_and_duplicates_nothing(client, services, victim):
    test = list_images(DATA / "Test", per_class=1)
    photos = [(new_photo_id(), path) for path in test.paths]  # 141 photos, one per class
    killed = {}

    def kill_when_half_sent(sent: int) -> None:
        if sent == len(photos) // 2 and not killed:
            services[victim].process.send_signal(signal.SIGKILL)
            services[victim].process.wait()
            killed["at"] = sent
            restart(services, victim)

    result = round_trip(client, photos, rate=60, timeout=60, on_sent=kill_when_half_sent)
    assert killed, "the service was not killed"
    counts = Counter({photo_id: len(found) for photo_id, found in result.predictions.items()})
    assert result.missing() == [], f"{len(result.missing())} photos lost after killing {victim}"
    assert result.duplicates() == 0, f"duplicated: {[p for p, n in counts.items() if n > 1][:5]}"
    assert len(counts) == len(photos)


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tools.cli", *args], capture_output=True, text=True, timeout=timeout)


def evaluation_folder(tmp_path) -> tuple:
    """Two Test photos of each of three varieties (in Fruits-360 folders) and four generated non-fruit images."""
    from tools.nonfruit import write_nonfruit

    root = tmp_path / "eval"
    for label in ("Banana 1", "Kiwi 1", "Lemon 1"):
        (root / label).mkdir(parents=True)
        for photo in sorted((DATA / "Test" / label).iterdir())[:2]:
            (root / label / photo.name).write_bytes(photo.read_bytes())
    write_nonfruit(root, 4, seed=1)
    return root


def test_evaluate_offline_and_through_the_pipeline_agree(settings, services, tmp_path):
    root = evaluation_folder(tmp_path)
    offline = cli("evaluate", "--offline", "--json", str(tmp_path / "offline.json"), str(root))
    assert offline.returncode == 0, offline.stderr
    through = cli("evaluate", "--json", str(tmp_path / "through.json"), str(root))
    assert through.returncode == 0, through.stderr
    import json

    reports = [json.loads((tmp_path / f"{name}.json").read_text())[str(root)] for name in ("offline", "through")]
    for report in reports:
        scores = report["evaluation"]
        assert (scores["images"], scores["typed"], scores["foreign"]) == (6, 6, 4)
        assert scores["type_top1_accuracy"] >= 5 / 6 and set(report["per_type"]) == {"banana", "kiwi", "lemon"}
    # The same photos, bundle and code: the same answers either way (a photo right at a decision
    # boundary may tip: features of differently composed batches differ in the last float bits).
    offline_scores, through_scores = (r["evaluation"] for r in reports)
    for count in ("top1_correct", "type_top1_correct", "unsure", "foreign_unsure"):
        assert abs(offline_scores[count] - through_scores[count]) <= 1, (count, offline_scores, through_scores)
    assert "type top-1" in offline.stdout and "not-ours photos unsure" in through.stdout


def test_model_list_promote_and_rollback(settings):
    listed = cli("model", "list", timeout=60)
    assert listed.returncode == 0 and " current " in listed.stdout, listed.stdout + listed.stderr
    (current,) = [line.split()[0] for line in listed.stdout.splitlines() if " current " in line]
    assert cli("model", "promote", "no-such-version", timeout=60).returncode == 1
    from core.model import ModelStore

    store = ModelStore(s3_client(settings), settings.model_bucket)
    history = store.previous_versions()
    assert cli("model", "promote", current, timeout=60).returncode == 0  # promoting the current one changes nothing
    assert store.current_version() == current and store.previous_versions() == history
    rolled = cli("model", "rollback", timeout=60)
    if not history:
        assert rolled.returncode == 1 and "no earlier current bundle" in rolled.stderr
    else:  # another test published before: roll back to it, then forward again
        assert rolled.returncode == 0 and store.current_version() == history[0]
        assert cli("model", "promote", current, timeout=60).returncode == 0 and store.current_version() == current

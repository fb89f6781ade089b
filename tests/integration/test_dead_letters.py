"""`fruits dead-letters list|replay` on a real Kafka: a replay sends the chosen letters'
originals back to their source topic once, skipping those replayed before and those whose
photo got its prediction since."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from confluent_kafka import Producer

from core.kafka import producer_config
from core.records import DeadLetter, ModelVersions, PhotoEvent, PhotoRef, Prediction, encode_record
from core.settings import PROJECT_ROOT, Settings, get_settings
from tests.integration import as_identity
from tools.deadletters import REPLAY_HEADER, read_topic
from tools.provision import ensure_topics

pytestmark = pytest.mark.integration
NOW = datetime.now(timezone.utc)


@pytest.fixture(scope="module")
def settings(stack: Settings) -> Iterator[Settings]:
    """Topics of this module alone: nothing another test wrote is counted."""
    run = uuid.uuid4().hex[:6]
    with pytest.MonkeyPatch.context() as env:
        for name in ("PHOTOS", "PREDICTIONS", "DEAD_LETTER"):
            env.setenv(f"FRUITS_TOPIC_{name}", f"dltest-{run}.{name.lower()}")
        get_settings.cache_clear()
        settings = as_identity(get_settings(), "admin")  # the operator: dead letters are theirs alone
        ensure_topics(settings)
        yield settings
    get_settings.cache_clear()


def dead_letter(settings: Settings, photo_id: str, reason: str, hours_ago: float, offset: int) -> DeadLetter:
    event = PhotoEvent(photo_id, "alice", NOW, "eu", image=b"jpeg " + photo_id.encode())
    return DeadLetter(
        source_topic=settings.topic_photos, source_partition=0, source_offset=offset, stage="ingest",
        error_class=reason, error_message="ValueError raised in 3 tries",
        failed_at=NOW - timedelta(hours=hours_ago), photo_id=photo_id,
        original_key=photo_id.encode(), original_value=encode_record(event),
    )  # fmt: skip


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.cli", "dead-letters", *args],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_list_and_replay_without_duplicating_what_succeeded(settings):
    letters = {
        "a": dead_letter(settings, "a", "internal_error", 1, 0),  # to replay
        "b": dead_letter(settings, "b", "internal_error", 1, 1),  # predicted since: skipped
        "c": dead_letter(settings, "c", "undecodable_image", 1, 2),  # another reason
        "d": dead_letter(settings, "d", "internal_error", 50, 3),  # failed before --since
    }
    producer = Producer(producer_config(settings))
    for photo_id, letter in letters.items():
        producer.produce(settings.topic_dead_letter, key=photo_id.encode(), value=encode_record(letter))
    ref = PhotoRef("b", "alice", NOW, NOW, "eu", "s3://b/originals/alice/b")
    prediction = Prediction(ref, NOW, "Kiwi 1", 0.9, [], ModelVersions("f", "v", "v"))
    producer.produce(settings.topic_predictions, key=b"b", value=encode_record(prediction))
    assert producer.flush(30) == 0

    listed = cli("list", "--reason", "internal_error", "--since", "1d", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert sorted(row["photo_id"] for row in rows) == ["a", "b"]
    assert rows[0]["position"].startswith(settings.topic_dead_letter) and "2 dead letters" in listed.stderr

    dry = cli("replay", "--reason", "internal_error", "--since", "1d", "--dry-run")
    assert dry.returncode == 0 and "would replay 1 " in dry.stderr and "1 predicted since" in dry.stderr, dry.stderr
    assert list(read_topic(settings, settings.topic_photos)) == []

    for run in range(2):  # the second replay finds it replayed
        replayed = cli("replay", "--reason", "internal_error", "--since", "1d")
        assert replayed.returncode == 0, replayed.stderr
        assert f"replayed {1 - run} " in replayed.stderr and f"skipped {run} replayed before" in replayed.stderr
    (record,) = read_topic(settings, settings.topic_photos)
    assert (record.key(), record.value()) == (b"a", letters["a"].original_value)
    (header,) = record.headers()
    assert header[0] == REPLAY_HEADER and header[1].decode().startswith(f"{settings.topic_dead_letter}[")

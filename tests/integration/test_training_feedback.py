"""fruits train --with-feedback on real SeaweedFS: the lake's feedback table (written here as
the streaming job writes it) selects the photos, and their originals are read from the
region bucket as the trainer's identity; a deleted original is left out."""

from __future__ import annotations

import io
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core import lake
from core.model import ModelStore
from core.recipe import FEEDBACK_CLASS
from core.s3 import s3_client
from core.settings import PROJECT_ROOT, Settings, get_settings
from tests.integration import as_identity
from training.feedback import from_lake

pytestmark = pytest.mark.integration

FRUITS360 = PROJECT_ROOT.parent / "shared" / "data" / "fruits360"
BANANA = sorted((FRUITS360 / "Test" / "Banana 1").glob("*.jpg"))[:4]


@pytest.fixture
def settings(stack: Settings) -> Iterator[Settings]:
    """A lake prefix of this test alone; the trainer's identity (``fruits train`` acts as admin)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FRUITS_LAKE_PREFIX", f"feedbacktest-{uuid.uuid4().hex[:6]}")
        get_settings.cache_clear()
        yield as_identity(get_settings(), "admin")
    get_settings.cache_clear()


def write_feedback_table(settings: Settings, rows: list[dict]) -> None:
    """One Parquet file in the table's partition folders, as the streaming job lands a micro-batch."""
    out = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), out)
    key = lake.lake_key(settings, lake.FEEDBACK, "date=2026-11-27", "batch_id=0", "part-00000.parquet")
    s3_client(settings).put_object(Bucket=settings.lake_bucket, Key=key, Body=out.getvalue())


@pytest.fixture
def feedback_table(settings: Settings) -> tuple[list[str], list[str]]:
    """Four photos' verdicts in the lake (ids, original URIs): the first confirmed a banana, the
    second was corrected to a kiwi, the third is wrong without a type, the fourth's original is gone."""
    if len(BANANA) < 4:
        pytest.skip("sample dataset not found")
    client = s3_client(settings)
    bucket = settings.region_buckets["eu"]
    ids = [f"fb-{uuid.uuid4().hex[:10]}" for _ in BANANA]
    uris = [f"s3://{bucket}/originals/{photo_id}.jpg" for photo_id in ids]
    for photo_id, path in zip(ids[:3], BANANA):  # the fourth photo's original was deleted
        client.put_object(Bucket=bucket, Key=f"originals/{photo_id}.jpg", Body=path.read_bytes())
    given = datetime(2026, 11, 27, 10, tzinfo=timezone.utc)
    verdicts = [  # (photo, correct, corrected type, minutes after `given`)
        (0, True, None, 0),
        (1, True, None, 0), (1, False, "kiwi", 5),  # changed their mind: kiwi
        (2, False, None, 0),  # wrong, without a type: nothing to learn
        (3, True, None, 0),  # original gone
    ]  # fmt: skip
    write_feedback_table(settings, [
        {"photo_id": ids[i], "user_id": "u1", "region": "eu", "original_uri": uris[i],
         "given_at": given + timedelta(minutes=m), "predicted_label": "Banana 1", "predicted_type": "banana",
         "unsure": False, "correct": correct, "corrected_type": corrected, "kafka_partition": 0, "kafka_offset": n,
         "kafka_timestamp": given + timedelta(minutes=m)}
        for n, (i, correct, corrected, m) in enumerate(verdicts)
    ])  # fmt: skip
    return ids, uris


def test_with_feedback_reads_the_selected_originals_from_their_region(settings: Settings, feedback_table) -> None:
    ids, uris = feedback_table
    images, selection = from_lake(settings)

    assert [(p.photo_id, p.fruit_type) for p in selection.photos] == sorted([(ids[0], "banana"), (ids[1], "kiwi")])
    assert (selection.right, selection.corrected) == (1, 1)
    assert selection.left_out == {"wrong, without the right type": 1, "original gone": 1}
    by_uri = dict(zip(images.rows.sources, images.images))
    assert by_uri[uris[0]]() == BANANA[0].read_bytes() and by_uri[uris[1]]() == BANANA[1].read_bytes()
    assert dict(zip(images.rows.sources, images.rows.labels)) == {
        uris[0]: FEEDBACK_CLASS + "banana", uris[1]: FEEDBACK_CLASS + "kiwi"
    }


def test_without_a_feedback_table_there_is_nothing_to_add(settings: Settings) -> None:
    images, selection = from_lake(settings)
    assert images.images == [] and selection.photos == [] and selection.left_out == {}


def test_fruits_train_with_feedback_trains_the_corrected_photos(settings: Settings, feedback_table) -> None:
    """The command end to end, small: 2 Fruits-360 photos per class plus the two feedback photos."""
    result = subprocess.run(
        [sys.executable, "-m", "tools.cli", "train", str(FRUITS360), "--per-class", "2", "--no-grocerystore",
         "--empty-scenes", "0", "--augmented-copies", "0", "--no-evaluate", "--no-publish", "--with-feedback"],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    left_out = "left out: 1 wrong, without the right type, 1 original gone"
    assert f"feedback: 2 photos (1 confirmed, 1 corrected); {left_out}" in result.stdout, result.stdout
    store = ModelStore(s3_client(settings), settings.model_bucket)
    bundle = store.load(store.versions()[-1])
    assert {FEEDBACK_CLASS + "banana", FEEDBACK_CLASS + "kiwi"} <= set(bundle.classifier.labels)
    assert "2 photos labelled by users' feedback" in bundle.manifest.trained_on.source

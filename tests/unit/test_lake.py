import io

import numpy as np
import pyarrow.parquet as pq
import pytest

from core import lake
from core.model import NOT_OURS
from core.recipe import TrainingRows
from core.settings import Settings


def test_lake_paths_with_and_without_prefix():
    assert lake.lake_uri(Settings(lake_bucket="b"), "features") == "s3://b/features"
    prefixed = Settings(lake_bucket="b", lake_prefix="/prod/")
    assert lake.lake_uri(prefixed, "features", scheme="s3a") == "s3a://b/prod/features"
    assert lake.checkpoint_root(prefixed) == "s3a://b/prod/_checkpoints"
    assert lake.checkpoint_root(Settings(spark_checkpoint_location="hdfs:///ck/")) == "hdfs:///ck"
    assert lake.training_features_uri(prefixed, "v1") == "s3://b/prod/training_features/version=v1"
    assert lake.to_s3a("s3://b/k") == "s3a://b/k" and lake.to_s3a("/tmp/x") == "/tmp/x"


class Recorder:
    def __init__(self) -> None:
        self.puts: dict[tuple[str, str], bytes] = {}

    def put_object(self, Bucket: str, Key: str, Body: bytes) -> None:
        self.puts[Bucket, Key] = Body


def test_training_features_are_one_parquet_object_in_their_version_folder():
    client = Recorder()
    settings = Settings(lake_bucket="lake", lake_prefix="p")
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    rows = TrainingRows(list("aabbc"), ["apple", "apple", "pear", "pear", NOT_OURS],
                        ["fruits360"] * 2 + ["grocerystore"] * 3, [f"f{i}" for i in range(5)])  # fmt: skip
    uri = lake.write_training_features(client, settings, "v9", x, rows, "f@1")
    assert uri == "s3://lake/p/training_features/version=v9"
    ((bucket, key), body), = client.puts.items()
    assert (bucket, key) == ("lake", "p/training_features/version=v9/part-00000.parquet")
    table = pq.read_table(io.BytesIO(body))
    assert table.column_names == ["label", "features", "source", "featurizer_id", "type", "origin"]
    np.testing.assert_array_equal(np.array(table["features"].to_pylist(), dtype=np.float32), x)
    assert table["label"].to_pylist() == list("aabbc") and set(table["featurizer_id"].to_pylist()) == {"f@1"}
    assert lake.rows_of_table(table.to_pydict()) == rows


def test_training_features_written_before_types_read_as_specimens():
    old = {"label": ["Apple Golden 1", "Banana 1"], "source": ["a.jpg", "b.jpg"]}
    rows = lake.rows_of_table(old)
    assert rows.types == ["apple", "banana"] and rows.origins == ["fruits360", "fruits360"]


def test_read_table_retries_when_a_listed_file_vanished(tmp_path, monkeypatch):
    """A replayed micro-batch overwrites its partitions while a reader lists them: the read
    is retried on a fresh listing, at most READ_ATTEMPTS times."""
    import pyarrow as pa
    import pyarrow.dataset as ds
    from pyarrow import fs

    (tmp_path / "predictions" / "date=2026-11-26").mkdir(parents=True)
    pq.write_table(pa.table({"photo_id": ["a", "b"]}), tmp_path / "predictions" / "date=2026-11-26" / "part-0.parquet")
    settings = Settings(lake_bucket=str(tmp_path), lake_prefix="")
    monkeypatch.setattr(lake, "arrow_s3_filesystem", lambda s: fs.LocalFileSystem())
    monkeypatch.setattr(lake.time, "sleep", lambda seconds: None)
    real_dataset, attempts = ds.dataset, []

    class Vanishing:
        """Lists the real files; its read fails ``fail`` times as if a file had been deleted."""

        fail = 2

        def __init__(self, *args, **kwargs):
            self.dataset = real_dataset(*args, **kwargs)
            self.files = self.dataset.files

        def to_table(self, columns=None):
            attempts.append(1)
            if len(attempts) <= Vanishing.fail:
                raise OSError("AWS Error NO_SUCH_KEY during GetObject operation")
            return self.dataset.to_table(columns=columns)

    monkeypatch.setattr(ds, "dataset", Vanishing)
    assert lake.read_table(settings, "predictions", columns=["photo_id"]).num_rows == 2
    assert len(attempts) == 3
    attempts.clear()
    Vanishing.fail = lake.READ_ATTEMPTS
    with pytest.raises(OSError, match="NO_SUCH_KEY"):
        lake.read_table(settings, "predictions")
    assert len(attempts) == lake.READ_ATTEMPTS

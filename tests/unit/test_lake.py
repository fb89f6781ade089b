import io

import numpy as np
import pyarrow.parquet as pq

from core import lake
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
    uri = lake.write_training_features(client, settings, "v9", x, list("aabbc"), [f"f{i}" for i in range(5)], "f@1")
    assert uri == "s3://lake/p/training_features/version=v9"
    ((bucket, key), body), = client.puts.items()
    assert (bucket, key) == ("lake", "p/training_features/version=v9/part-00000.parquet")
    table = pq.read_table(io.BytesIO(body))
    assert table.column_names == ["label", "features", "source", "featurizer_id"]
    np.testing.assert_array_equal(np.array(table["features"].to_pylist(), dtype=np.float32), x)
    assert table["label"].to_pylist() == list("aabbc") and set(table["featurizer_id"].to_pylist()) == {"f@1"}

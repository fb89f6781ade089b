"""The Spark trainer on real SeaweedFS and Spark local[2], on a small copy of the sample:
images uploaded and read back with binaryFile from s3a://, featurized by the pandas UDF
exactly as the local featurizer does, and a bundle of the usual format."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from core import lake
from core.evaluation import evaluate
from core.featurizer import Featurizer
from core.model import ModelStore
from core.s3 import s3_client
from core.settings import PROJECT_ROOT, Settings, get_settings
from tests.integration import as_identity
from training.trainer import featurize_files

pytestmark = pytest.mark.integration

DATA = PROJECT_ROOT.parent / "shared" / "data" / "fruits360"
CLASSES = ("Banana 1", "Kiwi 1", "Lemon 1")


@pytest.fixture(scope="module")
def settings(stack: Settings) -> Iterator[Settings]:
    """As the ``spark`` identity: the Spark trainer needs no more than its rights (`fruits train`
    runs it as ``admin``); S3A trusts the stack's CA through the JVM's truststore."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FRUITS_LAKE_PREFIX", f"sparktrain-{uuid.uuid4().hex[:6]}")
        env.setenv("FRUITS_SPARK_DRIVER_MEMORY", "1g")
        get_settings.cache_clear()
        yield as_identity(get_settings(), "spark")
    get_settings.cache_clear()
    from pyspark.sql import SparkSession

    if (session := SparkSession.getActiveSession()) is not None:
        session.stop()  # the trainer's, in this process


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (DATA / "Training").is_dir():
        pytest.skip(f"sample dataset not found at {DATA}")
    root = tmp_path_factory.mktemp("fruits360-small")
    for split, count in (("Training", 8), ("Test", 3)):
        for label in CLASSES:
            (root / split / label).mkdir(parents=True)
            for path in sorted((DATA / split / label).iterdir())[:count]:
                shutil.copy(path, root / split / label / path.name)
    return root


def test_spark_trainer_uploads_featurizes_like_the_services_and_makes_a_bundle(settings, small_dataset):
    from spark.train_job import train_with_spark

    bundle = train_with_spark(settings, small_dataset, evaluate=True, upload=True)

    assert set(bundle.classifier.labels) == set(CLASSES)
    manifest = bundle.manifest
    assert manifest.trained_on.engine == "spark" and manifest.trained_on.images == 8 * len(CLASSES)
    assert manifest.evaluated_on == lake.lake_uri(settings, "images", "Test")
    assert manifest.evaluation.images == 3 * len(CLASSES)
    assert manifest.evaluation.top1_accuracy >= 0.9
    assert 0.98 <= bundle.pca.explained_variance_ratio.sum() <= 1.0

    # The labelled features in the lake are the local featurizer's, bit for bit or nearly.
    table = lake.read_table(settings, lake.TRAINING_FEATURES).to_pylist()
    assert {row["version"] for row in table} == {bundle.version} and len(table) == 8 * len(CLASSES)
    assert manifest.training_features == lake.training_features_uri(settings, bundle.version)
    by_image = {(row["label"], row["source"].rsplit("/", 1)[1]): np.asarray(row["features"]) for row in table}
    local_paths = sorted((small_dataset / "Training").glob("*/*"))
    local = featurize_files(local_paths, Featurizer(settings.featurizer_path), "featurize locally")
    spark_features = np.stack([by_image[path.parent.name, path.name] for path in local_paths])
    np.testing.assert_allclose(spark_features, local, atol=1e-4)

    # The executors' evaluation is the one the local trainer makes on the same Test images.
    test_paths = sorted((small_dataset / "Test").glob("*/*"))
    test_local = featurize_files(test_paths, Featurizer(settings.featurizer_path), "featurize Test locally")
    assert manifest.evaluation == evaluate(bundle, test_local, [path.parent.name for path in test_paths])

    # Same bundle format: it saves and loads like the local trainer's.
    store = ModelStore(s3_client(settings), settings.model_bucket)
    store.save(bundle, make_current=False)
    loaded = store.load(bundle.version)
    np.testing.assert_array_equal(loaded.pca.components, bundle.pca.components)
    assert loaded.manifest == manifest

    # Uploading again sends nothing: the images are there already.
    from spark.train_job import upload_split

    assert upload_split(settings, small_dataset / "Training", "Training") == 0

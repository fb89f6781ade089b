"""The Spark trainer on real SeaweedFS and Spark local[2], on a small copy of the sample:
images packed into Parquet on the lake (once: packing again packs nothing), read back from
s3a://, featurized by the pandas UDF exactly as the local featurizer does, the local trainer's
recipe on the same rows, and a bundle of the usual format."""

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
from training.trainer import TrainingData, featurize_files, train

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


def test_spark_trainer_packs_featurizes_like_the_services_and_makes_the_local_trainers_bundle(settings, small_dataset):
    from spark.train_job import train_with_spark
    from training.packing import pack_training_data

    data = TrainingData(small_dataset)
    packer = as_identity(settings, "admin")  # `fruits train` packs as the operator
    pack_training_data(packer, data, with_test=True)
    bundle = train_with_spark(settings, evaluate=True)

    assert set(bundle.classifier.labels) == set(CLASSES)
    manifest = bundle.manifest
    assert manifest.trained_on.engine == "spark" and manifest.trained_on.images == 8 * len(CLASSES)
    assert manifest.evaluated_on == lake.packed_images_uri(settings, "Test")
    assert manifest.evaluation.images == 3 * len(CLASSES)
    assert manifest.evaluation.top1_accuracy >= 0.9
    assert 0.98 <= bundle.pca.explained_variance_ratio.sum() <= 1.0

    # The labelled features in the lake are the local featurizer's, bit for bit or nearly.
    table = lake.read_table(settings, lake.TRAINING_FEATURES).to_pylist()
    assert {row["version"] for row in table} == {bundle.version} and len(table) == 8 * len(CLASSES)
    assert {row["origin"] for row in table} == {"fruits360"}
    assert manifest.training_features == lake.training_features_uri(settings, bundle.version)
    by_image = {row["source"]: np.asarray(row["features"]) for row in table}
    local_paths = sorted((small_dataset / "Training").glob("*/*"))
    local = featurize_files(local_paths, Featurizer(settings.featurizer_path), "featurize locally")
    spark_features = np.stack([by_image[str(path)] for path in local_paths])
    np.testing.assert_allclose(spark_features, local, atol=1e-4)

    # The local trainer on the same data: the same recipe, so the same calibration and scores.
    local_bundle = train(data, Featurizer(settings.featurizer_path))
    assert local_bundle.pca.k == bundle.pca.k
    assert manifest.calibration.temperature == pytest.approx(local_bundle.manifest.calibration.temperature, rel=0.02)
    assert manifest.validation == local_bundle.manifest.validation
    assert manifest.evaluation == local_bundle.manifest.evaluation

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


def test_packing_again_packs_nothing_and_other_data_anew(settings, small_dataset):
    from training.packing import is_packed, pack_split, pack_training_data
    from training.trainer import training_images

    packer = as_identity(settings, "admin")
    pack_training_data(packer, TrainingData(small_dataset), with_test=True)  # as the first test left it, or anew
    same = training_images(TrainingData(small_dataset))
    assert not pack_split(packer, "Training", same.images, same.rows, TrainingData(small_dataset).describe())
    fewer = TrainingData(small_dataset, per_class=5)
    assert is_packed(packer, TrainingData(small_dataset)) and not is_packed(packer, fewer)
    images = training_images(fewer)
    assert pack_split(packer, "Training", images.images, images.rows, fewer.describe(), fewer.per_class)
    packed = lake.read_table(packer, f"{lake.PACKED_IMAGES}/Training")
    assert packed.num_rows == 5 * len(CLASSES)
    assert packed.column("row").to_pylist() == list(range(5 * len(CLASSES)))
    assert packed.column("source").to_pylist() == images.rows.sources

"""``fruits demo``: the sample's Test images through Kafka and the five services."""

from __future__ import annotations

import statistics
from pathlib import Path

from botocore.exceptions import BotoCoreError

from tools import GROCERYSTORE_SAMPLE
from core.photos import new_photo_id
from tools.roundtrip import round_trip
from core.featurizer import Featurizer
from core.kafka import check_reachable
from core.lake import training_features_writer
from core.model import ModelStore
from tools.services import start_services, stop_services
from core.s3 import check_bucket, s3_client
from core.settings import Settings
from tools.provision import ensure_buckets, ensure_topics
from core.catalog import type_of
from core.datasets import LabelledImages, list_images
from training.defaults import AUGMENTED_COPIES, EMPTY_SCENES, SYNTHETIC_PER_CLASS
from training.trainer import TrainingData, train


def spread(images: LabelledImages, limit: int | None) -> LabelledImages:
    """Every n-th image, so a limited run still covers all classes."""
    if not limit or limit >= len(images.paths):
        return images
    step = len(images.paths) / limit
    picked = [int(i * step) for i in range(limit)]
    return LabelledImages([images.paths[i] for i in picked], [images.labels[i] for i in picked])


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def prepare(settings: Settings, data: Path) -> str:
    """Check the stack, provision it, train a bundle if none is current; its version."""
    check_reachable(settings)
    ensure_topics(settings)
    client = s3_client(settings)
    try:
        ensure_buckets(settings)
    except BotoCoreError as exc:
        raise ConnectionError(
            f"cannot reach S3 at {settings.s3_endpoint_url} (is the stack up? `make up`): {exc}"
        ) from exc
    check_bucket(client, settings.model_bucket, settings.s3_endpoint_url)
    store = ModelStore(client, settings.model_bucket)
    version = store.current_version()
    featurizer = Featurizer(settings.featurizer_path)
    why = "no current model" if version is None else None
    if version is not None and (trained_for := store.load_manifest(version).featurizer_id) != featurizer.id:
        why = f"the current bundle {version} is for featurizer {trained_for}, the services run {featurizer.id}"
    if why is not None:
        training = TrainingData(
            data,
            grocerystore=GROCERYSTORE_SAMPLE if GROCERYSTORE_SAMPLE.is_dir() else None,
            synthetic_per_class=SYNTHETIC_PER_CLASS,
            empty_scenes=EMPTY_SCENES,
            augmented_copies=AUGMENTED_COPIES,
        )
        print(f"{why}: training on {training.describe()} first")
        # The labelled features go to the lake: the streaming PCA retrains on them.
        bundle = train(training, featurizer, save_features=training_features_writer(client, settings))
        store.save(bundle)
        version = bundle.version
        print(bundle.manifest.summary() + "; now current")
    return version


def labelled_photos(images: LabelledImages) -> tuple[list[tuple[str, Path]], dict[str, str]]:
    """A new photo id for each image, and the true label of each id."""
    photos = [(new_photo_id(), path) for path in images.paths]
    return photos, {photo_id: label for (photo_id, _), label in zip(photos, images.labels)}


def run_demo(settings: Settings, data: Path, limit: int | None, rate: float) -> int:
    """Provisions and trains as ``admin``, sends photos and reads predictions as ``client``."""
    print(f"model bundle: {prepare(settings.acting_as('admin'), data)}")
    settings = settings.acting_as("client")
    photos, label_of = labelled_photos(spread(list_images(data / "Test"), limit))

    print("starting the five services …")
    services = start_services(settings.state_dir / "logs")
    try:
        result = round_trip(settings, photos, rate=rate, progress=f"{len(photos)} photos at {rate:.0f}/s")
    finally:
        stop_services(services)

    received = len(result.predictions)
    first = {photo_id: found[0] for photo_id, found in result.predictions.items()}
    correct = sum(p.label == label_of[photo_id] for photo_id, p in first.items())
    type_correct = sum(p.fruit_type == type_of(label_of[photo_id]) for photo_id, p in first.items())
    unsure = sum(p.unsure for p in first.values())
    latencies = result.steady_latencies()
    startup = result.startup_seconds()
    print()
    print(f"photos sent            {len(photos)}")
    print(f"predictions received   {received} (missing {len(result.missing())}, duplicated {result.duplicates()})")
    print(f"variety top-1 accuracy {100 * correct / len(photos):.2f} %  ({correct}/{len(photos)})")
    print(f"type top-1 accuracy    {100 * type_correct / len(photos):.2f} %  ({type_correct}/{len(photos)})")
    print(f"answered unsure        {100 * unsure / len(photos):.2f} %  ({unsure}/{len(photos)})")
    if startup is not None:
        print(f"start-up               {1000 * startup:.0f} ms from the first photo sent to the first prediction")
    if latencies:
        print(
            f"latency (send→prediction) p50 {1000 * percentile(latencies, 0.5):.0f} ms, "
            f"p95 {1000 * percentile(latencies, 0.95):.0f} ms, p99 {1000 * percentile(latencies, 0.99):.0f} ms, "
            f"mean {1000 * statistics.fmean(latencies):.0f} ms at {rate:.0f} photos/s "
            f"({len(latencies)} photos sent after the first prediction; target p99 ≤ 150 ms)"
        )
    print(f"service logs in {settings.state_dir / 'logs'}; `make down` stops Kafka and SeaweedFS")
    return 0 if received == len(photos) and not result.duplicates() else 1

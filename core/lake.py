"""The Parquet lake on S3: where its tables live, and the labelled training features.

Layout, under ``s3://<lake bucket>/<lake prefix>/`` (see the README, "Spark")::

    features/date=YYYY-MM-DD/batch_id=N/part-*.parquet              PhotoFeatures + Kafka coordinates
    reduced/date=YYYY-MM-DD/batch_id=N/part-*.parquet               ReducedFeatures + Kafka coordinates
    predictions/date=YYYY-MM-DD/label=L/batch_id=N/part-*.parquet   Prediction + Kafka coordinates
    feedback/date=YYYY-MM-DD/batch_id=N/part-*.parquet              Feedback (date: given_at) + Kafka coordinates
    rejected/topic=T/date=YYYY-MM-DD/batch_id=N/part-*.parquet      records that did not decode, raw bytes
    training_features/version=V/part-*.parquet                      label, features, source, featurizer_id
    training_images/<split>/part-*.parquet, _manifest.json          the Spark trainer's packed images
    _checkpoints/<query>/                                          the streaming job's checkpoints (+ PCA state)

The streaming job writes the first five; both trainers write ``training_features``
(the labelled set a bundle's classifier was trained on; the bundle's manifest names it),
which is what the streaming job retrains the classifier on when it publishes a new PCA.
The Spark jobs use ``s3a://`` URIs for the same objects.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from core.recipe import TrainingRows
from core.settings import Settings

FEATURES = "features"
REDUCED = "reduced"
PREDICTIONS = "predictions"
FEEDBACK = "feedback"
REJECTED = "rejected"
TRAINING_FEATURES = "training_features"
CHECKPOINTS = "_checkpoints"
PACKED_IMAGES = "training_images"
PACKED_MANIFEST = "_manifest.json"
READ_ATTEMPTS = 3


def lake_key(settings: Settings, *parts: str) -> str:
    """Object key (or key prefix) of a lake path, below the lake prefix."""
    return "/".join(p.strip("/") for p in (settings.lake_prefix, *parts) if p.strip("/"))


def lake_uri(settings: Settings, *parts: str, scheme: str = "s3") -> str:
    """``s3://<lake bucket>/<prefix>/<parts…>`` (``scheme="s3a"`` for Spark)."""
    key = lake_key(settings, *parts)
    return f"{scheme}://{settings.lake_bucket}" + (f"/{key}" if key else "")


def to_s3a(uri: str) -> str:
    """The ``s3a://`` form of an ``s3://`` URI, for Spark (other URIs are left alone)."""
    return "s3a://" + uri.removeprefix("s3://") if uri.startswith("s3://") else uri


def checkpoint_root(settings: Settings) -> str:
    return settings.spark_checkpoint_location.rstrip("/") or lake_uri(settings, CHECKPOINTS, scheme="s3a")


def training_features_uri(settings: Settings, version: str) -> str:
    """Where the labelled features of bundle ``version`` go: one Hive-style partition per bundle."""
    return lake_uri(settings, TRAINING_FEATURES, f"version={version}")


def packed_images_uri(settings: Settings, split: str, scheme: str = "s3") -> str:
    """Where a split's images are packed for the Spark trainer (``training.packing``)."""
    return lake_uri(settings, PACKED_IMAGES, split, scheme=scheme)


def packed_manifest_key(settings: Settings, split: str) -> str:
    return lake_key(settings, PACKED_IMAGES, split, PACKED_MANIFEST)


def packed_images_table(start: int, images: Sequence[bytes], rows: TrainingRows) -> Any:
    """Images ``start …`` of a training set as an Arrow table: ``row`` (the image's position in
    the set: the recipe's folds follow it), ``image`` (the encoded bytes), and ``label``,
    ``type``, ``origin``, ``source`` of ``rows`` (``core.recipe.TrainingRows``)."""
    import pyarrow as pa

    end = start + len(images)
    return pa.table(
        {
            "row": pa.array(range(start, end), pa.int64()),
            "image": pa.array(images, pa.binary()),
            "label": pa.array(rows.labels[start:end], pa.string()),
            "type": pa.array(rows.types[start:end], pa.string()),
            "origin": pa.array(rows.origins[start:end], pa.string()),
            "source": pa.array(rows.sources[start:end], pa.string()),
        }
    )


def training_features_table(features: np.ndarray, rows: TrainingRows, featurizer_id: str) -> Any:
    """The training set as an Arrow table: label, features (list<float>), source, featurizer_id,
    type, origin (``core.recipe``: fruits360, grocerystore, synthetic, empty)."""
    import pyarrow as pa

    x = np.ascontiguousarray(features, dtype=np.float32)
    n, dim = x.shape
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), dim).cast(pa.list_(pa.float32()))
    return pa.table(
        {
            "label": pa.array(rows.labels, pa.string()),
            "features": vectors,
            "source": pa.array(rows.sources, pa.string()),
            "featurizer_id": pa.array([featurizer_id] * n, pa.string()),
            "type": pa.array(rows.types, pa.string()),
            "origin": pa.array(rows.origins, pa.string()),
        }
    )


def rows_of_table(columns: Mapping[str, Sequence[Any]]) -> TrainingRows:
    """The rows of a training set read back (a pyarrow or pandas table's columns); a set written
    before fruit types (no ``type``/``origin``) holds Fruits-360 specimens only."""
    labels = [str(label) for label in columns["label"]]
    sources = [str(source) for source in columns["source"]]
    if "type" not in columns or "origin" not in columns:
        return TrainingRows.of_specimens(labels, sources)
    return TrainingRows(labels, [str(t) for t in columns["type"]], [str(o) for o in columns["origin"]], sources)


def write_training_features(
    client: Any, settings: Settings, version: str, features: np.ndarray, rows: TrainingRows, featurizer_id: str
) -> str:
    """Store the labelled features a bundle was trained on (one Parquet object, written
    before the bundle, so a manifest never names a missing set); returns its folder URI."""
    import pyarrow.parquet as pq

    out = io.BytesIO()
    pq.write_table(training_features_table(features, rows, featurizer_id), out, compression="zstd")
    uri = training_features_uri(settings, version)
    key = uri.removeprefix(f"s3://{settings.lake_bucket}/") + "/part-00000.parquet"
    client.put_object(Bucket=settings.lake_bucket, Key=key, Body=out.getvalue())
    return uri


def training_features_writer(client: Any, settings: Settings) -> Callable[[str, np.ndarray, TrainingRows, str], str]:
    """``training.trainer.train``'s ``save_features``: the labelled features go to the lake."""

    def save(version: str, features: np.ndarray, rows: TrainingRows, featurizer_id: str) -> str:
        return write_training_features(client, settings, version, features, rows, featurizer_id)

    return save


def arrow_s3_filesystem(settings: Settings) -> Any:
    """pyarrow's S3 filesystem with the configured endpoint, this identity's credentials (None:
    the AWS default chain) and CA (analysis, tests; it reads: writes go through boto3 or Spark,
    which request the configured server-side encryption)."""
    from urllib.parse import urlsplit

    from pyarrow import fs

    endpoint = urlsplit(settings.s3_endpoint_url) if settings.s3_endpoint_url else None
    credentials = settings.s3_credentials()
    return fs.S3FileSystem(
        access_key=credentials[0] if credentials else None,
        secret_key=credentials[1] if credentials else None,
        region=settings.s3_region,
        endpoint_override=endpoint.netloc if endpoint else None,
        scheme=endpoint.scheme if endpoint else "https",
        tls_ca_file_path=settings.s3_ca_file(),
    )


def read_table(settings: Settings, table: str, columns: list[str] | None = None) -> Any:
    """A lake table as one Arrow table (Hive partitions become columns), read with pyarrow
    alone: the streaming job writes plain Parquet folders, no Spark needed to read them.
    An absent table, or one whose first files are not written yet, reads as None.

    Listing and reading are not one atomic step: a micro-batch the job replays overwrites
    its partitions, so a file listed a moment ago may be gone. The read is then retried on
    a fresh listing (``READ_ATTEMPTS`` in all)."""
    import pyarrow.dataset as ds
    from pyarrow import fs

    filesystem = arrow_s3_filesystem(settings)
    path = f"{settings.lake_bucket}/{lake_key(settings, table)}"
    for attempt in range(1, READ_ATTEMPTS + 1):
        if filesystem.get_file_info(path).type != fs.FileType.Directory:
            return None
        dataset = ds.dataset(path, filesystem=filesystem, format="parquet", partitioning="hive")
        if not dataset.files:  # folders made, no Parquet file committed yet: no schema to read
            return None
        try:
            return dataset.to_table(columns=columns)
        except (FileNotFoundError, OSError) as exc:
            if attempt == READ_ATTEMPTS or not _vanished(exc):
                raise
            time.sleep(0.5 * attempt)
    raise AssertionError("unreachable")


def _vanished(exc: OSError) -> bool:
    """A listed object that no longer exists (pyarrow reports S3's NoSuchKey as an OSError)."""
    return isinstance(exc, FileNotFoundError) or "NO_SUCH_KEY" in str(exc)

"""The training images packed into Parquet on the lake, for the Spark trainer.

``fruits train --engine spark --upload`` packs the very images the local trainer would
featurize (``training.trainer.training_images``: Fruits-360, GroceryStore, augmented copies,
synthetic photos and empty scenes, made the same way from the same seed), in the local
trainer's order, with what the recipe needs of each (``core.lake.packed_images_table``), and
the Fruits-360 ``Test`` split beside ``Training`` for scoring. A few Parquet files of small
row groups instead of thousands of small objects: Spark splits them at row groups, so every
core gets a share, and each task reads a few large objects.

Packing is idempotent: a split's ``_manifest.json`` (written last) records what was packed
(the data's description, every image's source and file size); a split whose manifest says
the same is left as it is, another one is packed anew.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tqdm import tqdm

from core import lake
from core.datasets import list_images, test_dir_beside, training_dir
from core.recipe import TrainingRows
from core.s3 import s3_client
from core.settings import Settings
from training.trainer import ImageSource, TrainingData, training_images

log = logging.getLogger(__name__)

PART_BYTES = 64 * 2**20
"""Image bytes per Parquet file (about): a few large objects, each split by Spark at row groups."""
ROW_GROUP_ROWS = 64
"""Images per row group: the unit Spark hands to a task, small enough to spread a small set over many cores."""


def contents(description: str, rows: TrainingRows, per_class: int | None = None) -> dict[str, Any]:
    """What a packed split holds: the data's description and each image's source with its file
    size (None for an image made at packing time, whose seed the description names)."""
    return {
        "description": description,
        "per_class": per_class,
        "images": [[source, _size(source)] for source in rows.sources],
    }


def _size(source: str) -> int | None:
    try:
        return os.stat(source).st_size
    except (OSError, ValueError):  # a synthetic image's recipe, or an augmented copy's source
        return None


def packed_contents(client: Any, settings: Settings, split: str) -> dict[str, Any] | None:
    """The contents a split's manifest records, or None if it has none (never or not fully packed)."""
    try:
        body = client.get_object(Bucket=settings.lake_bucket, Key=lake.packed_manifest_key(settings, split))["Body"]
    except client.exceptions.NoSuchKey:
        return None
    return json.loads(body.read())["contents"]


def pack_split(
    settings: Settings,
    split: str,
    images: Sequence[ImageSource],
    rows: TrainingRows,
    description: str,
    per_class: int | None = None,
) -> bool:
    """Pack ``images`` as ``split`` unless it holds them already; True if it packed."""
    import pyarrow.parquet as pq

    client = s3_client(settings)
    wanted = contents(description, rows, per_class)
    if packed_contents(client, settings, split) == wanted:
        log.info("%s: already packed in %s", split, lake.packed_images_uri(settings, split))
        return False
    prefix = lake.lake_key(settings, lake.PACKED_IMAGES, split) + "/"
    _delete_prefix(client, settings.lake_bucket, prefix)  # the manifest first: a half-packed split has none
    files, total = [], 0
    with tqdm(total=len(images), desc=f"pack {split}", unit="img") as bar:
        for start, chunk in _parts(images, bar):
            table = lake.packed_images_table(start, chunk, rows)
            out = io.BytesIO()
            pq.write_table(table, out, row_group_size=ROW_GROUP_ROWS, compression="none")  # JPEGs: nothing to gain
            key = f"{prefix}part-{len(files):05d}.parquet"
            client.put_object(Bucket=settings.lake_bucket, Key=key, Body=out.getvalue())
            files.append(key.rsplit("/", 1)[1])
            total += sum(map(len, chunk))
    manifest = {"contents": wanted, "files": files, "rows": len(images), "image_bytes": total}
    client.put_object(
        Bucket=settings.lake_bucket, Key=lake.packed_manifest_key(settings, split), Body=json.dumps(manifest).encode()
    )
    log.info("%s: %d images (%.0f MB) packed into %d files", split, len(images), total / 2**20, len(files))
    return True


def _parts(images: Sequence[ImageSource], bar: tqdm) -> Iterator[tuple[int, list[bytes]]]:
    """The images' bytes (read or made on two threads, in order), cut into parts of about PART_BYTES."""
    chunk: list[bytes] = []
    start, size = 0, 0
    with ThreadPoolExecutor(2) as pool:
        for data in pool.map(lambda image: image(), images):
            chunk.append(data)
            size += len(data)
            bar.update()
            if size >= PART_BYTES:
                yield start, chunk
                start, chunk, size = start + len(chunk), [], 0
    if chunk:
        yield start, chunk


def _delete_prefix(client: Any, bucket: str, prefix: str) -> None:
    manifest = [{"Key": prefix + lake.PACKED_MANIFEST}]
    client.delete_objects(Bucket=bucket, Delete={"Objects": manifest})
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        if keys := [{"Key": obj["Key"]} for obj in page.get("Contents", [])]:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys})


def is_packed(settings: Settings, data: TrainingData) -> bool:
    """Whether the lake's packed Training split is the training set of ``data``."""
    rows = training_images(data).rows  # lists the files: no image is read or made
    return packed_contents(s3_client(settings), settings, "Training") == contents(data.describe(), rows, data.per_class)


def pack_training_data(settings: Settings, data: TrainingData, with_test: bool) -> None:
    """Pack the training set of ``data`` as ``Training`` and, if ``with_test`` and there is one,
    the Fruits-360 Test split beside it as ``Test``."""
    training = training_images(data)
    pack_split(settings, "Training", training.images, training.rows, data.describe(), data.per_class)
    test_dir = test_dir_beside(training_dir(data.fruits360))
    if with_test and test_dir is not None:
        test = list_images(test_dir)
        paths: list[Path] = list(test.paths)
        rows = TrainingRows.of_specimens(test.labels, [str(p) for p in paths])
        pack_split(settings, "Test", [p.read_bytes for p in paths], rows, str(test_dir))


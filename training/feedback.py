"""Users' photos with the fruit type their feedback gave them, as training data
(``fruits train --with-feedback``).

The streaming job lands every ``Feedback`` record in the lake's ``feedback`` table. For each
photo the latest verdict counts (a user may change their mind): a "right" confirms the
predicted type, a "wrong — it is …" gives the corrected one; a "wrong" without a type from the
catalog teaches nothing and is left out. Each photo becomes one training row of class
``FB:<type>`` (``core.recipe.FEEDBACK_CLASS``), a real photo like GroceryStore's: never a
specimen, so it does not move the unsure threshold, and it is validated out of fold like any
other row.

Residency: the originals stay in their region's bucket. The trainer reads each one where it
is, with its own identity (``admin`` today: ``tools/s3_rights.py``), featurizes it in memory and
keeps only its features; what leaves the region is what the model learns from the photos
(the PCA and the classifier in the bundle) and their feature vectors in the lake's
``training_features`` table, never the photos.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from botocore.exceptions import ClientError

from core import lake
from core.catalog import load_types
from core.recipe import FEEDBACK, FEEDBACK_CLASS, TrainingRows
from core.s3 import parse_s3_uri, read_object, s3_client
from core.settings import Settings
from training.trainer import TrainingImages


@dataclass(frozen=True)
class FeedbackPhoto:
    """A user's photo and the fruit type their latest verdict gave it."""

    photo_id: str
    original_uri: str
    fruit_type: str
    confirmed: bool
    """True: the verdict confirmed the predicted type; False: it named another one."""


@dataclass(frozen=True)
class Selection:
    photos: list[FeedbackPhoto]
    left_out: dict[str, int]
    """Photos not trained on, by why."""

    @property
    def right(self) -> int:
        return sum(p.confirmed for p in self.photos)

    @property
    def corrected(self) -> int:
        return len(self.photos) - self.right


def _latest(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], Mapping[str, Any]]:
    """The latest verdict of each (user, photo): by time given, then by position in the topic."""
    latest: dict[tuple[str, str], Mapping[str, Any]] = {}
    for row in rows:
        key = (row["user_id"], row["photo_id"])
        order = (row["given_at"], row["kafka_partition"], row["kafka_offset"])
        if key not in latest or order > (latest[key]["given_at"], latest[key]["kafka_partition"],
                                         latest[key]["kafka_offset"]):  # fmt: skip
            latest[key] = row
    return latest


def select_feedback(rows: Iterable[Mapping[str, Any]], types: Collection[str]) -> Selection:
    """The photos to train on from the feedback table's ``rows``: the latest verdict of each,
    labelled with the confirmed or corrected type when it is one of the catalog's ``types``."""
    photos: list[FeedbackPhoto] = []
    left_out: dict[str, int] = {}
    for (_, photo_id), row in sorted(_latest(rows).items()):
        fruit_type = row["predicted_type"] if row["correct"] else row["corrected_type"]
        if fruit_type is None:
            why = "right, but the answer named no type" if row["correct"] else "wrong, without the right type"
        elif fruit_type not in types:
            why = "a type not in the catalog"
        else:
            photos.append(FeedbackPhoto(photo_id, row["original_uri"], fruit_type, row["correct"]))
            continue
        left_out[why] = left_out.get(why, 0) + 1
    return Selection(photos, left_out)


def feedback_images(photos: Iterable[FeedbackPhoto], read: Callable[[str], bytes]) -> TrainingImages:
    """Training images of the selected photos; ``read(uri)`` fetches an original when it is featurized."""
    photos = list(photos)
    rows = TrainingRows(
        [FEEDBACK_CLASS + p.fruit_type for p in photos], [p.fruit_type for p in photos],
        [FEEDBACK] * len(photos), [p.original_uri for p in photos],
    )  # fmt: skip
    return TrainingImages([lambda uri=p.original_uri: read(uri) for p in photos], rows)


def from_lake(settings: Settings) -> tuple[TrainingImages, Selection]:
    """The photos of the lake's feedback table to train on, read from their region buckets as
    ``settings``' identity when featurized; an original that is gone (deleted) is left out."""
    table = lake.read_table(settings, lake.FEEDBACK)
    selection = select_feedback([] if table is None else table.to_pylist(), load_types())
    client = s3_client(settings)
    present, left_out = [], dict(selection.left_out)
    for photo in selection.photos:
        bucket, key = parse_s3_uri(photo.original_uri)
        try:
            client.head_object(Bucket=bucket, Key=key)
            present.append(photo)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NoSuchBucket"):
                raise
            left_out["original gone"] = left_out.get("original gone", 0) + 1
    selection = replace(selection, photos=present, left_out=left_out)
    images = feedback_images(present, lambda uri: read_object(client, uri, settings.max_image_bytes))
    return images, selection

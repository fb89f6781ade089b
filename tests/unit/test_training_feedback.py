"""fruits train --with-feedback: which of the lake's feedback rows become training photos, and how labelled."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from core.recipe import FEEDBACK, FEEDBACK_CLASS
from training.feedback import FeedbackPhoto, feedback_images, select_feedback

TYPES = {"apple", "banana", "kiwi"}
T0 = datetime(2026, 11, 27, tzinfo=timezone.utc)
offsets = iter(range(1000))


def row(photo: str, correct: bool, corrected: str | None = None, predicted: str | None = "apple",
        minutes: float = 0, user: str = "u1", partition: int = 0) -> dict:  # fmt: skip
    return {
        "photo_id": photo, "user_id": user, "original_uri": f"s3://fruits-photos-eu/originals/{photo}.jpg",
        "given_at": T0 + timedelta(minutes=minutes), "predicted_type": predicted, "correct": correct,
        "corrected_type": corrected, "kafka_partition": partition, "kafka_offset": next(offsets),
    }  # fmt: skip


def test_right_answers_keep_the_predicted_type_and_corrections_the_corrected_one():
    selection = select_feedback([row("p1", True), row("p2", False, "banana")], TYPES)
    assert selection.photos == [
        FeedbackPhoto("p1", "s3://fruits-photos-eu/originals/p1.jpg", "apple", confirmed=True),
        FeedbackPhoto("p2", "s3://fruits-photos-eu/originals/p2.jpg", "banana", confirmed=False),
    ]
    assert (selection.right, selection.corrected, selection.left_out) == (1, 1, {})


def test_the_latest_verdict_of_a_photo_counts_whatever_order_the_rows_come_in():
    rows = [row("p1", False, "kiwi", minutes=5), row("p1", True, minutes=1), row("p1", False, "banana", minutes=3)]
    for ordered in (rows, rows[::-1]):
        assert [p.fruit_type for p in select_feedback(ordered, TYPES).photos] == ["kiwi"]
    # The same instant: the later record in the topic wins.
    tie = [row("p2", True, minutes=1), row("p2", False, "banana", minutes=1)]
    assert [p.fruit_type for p in select_feedback(tie[::-1], TYPES).photos] == ["banana"]


def test_verdicts_that_teach_no_type_are_left_out_and_counted():
    selection = select_feedback(
        [
            row("wrong-untold", False, None),
            row("right-no-type", True, predicted=None),
            row("not-in-catalog", False, "durian"),
            row("later-untold", True, minutes=1), row("later-untold", False, None, minutes=2),
        ],
        TYPES,
    )  # fmt: skip
    assert selection.photos == []
    assert selection.left_out == {
        "wrong, without the right type": 2, "right, but the answer named no type": 1, "a type not in the catalog": 1,
    }  # fmt: skip


def test_photos_of_different_users_are_kept_apart():
    selection = select_feedback([row("p1", True, user="u1"), row("p1", False, "kiwi", user="u2", minutes=1)], TYPES)
    assert sorted(p.fruit_type for p in selection.photos) == ["apple", "kiwi"]


def test_feedback_images_are_read_when_featurized_and_labelled_by_type():
    photos = [FeedbackPhoto("p1", "s3://b/p1.jpg", "apple", True), FeedbackPhoto("p2", "s3://b/p2.jpg", "kiwi", False)]
    read = []
    images = feedback_images(photos, lambda uri: read.append(uri) or uri.encode())
    assert read == []
    assert [image() for image in images.images] == [b"s3://b/p1.jpg", b"s3://b/p2.jpg"]
    assert images.rows.labels == [FEEDBACK_CLASS + "apple", FEEDBACK_CLASS + "kiwi"]
    assert images.rows.types == ["apple", "kiwi"] and images.rows.origins == [FEEDBACK, FEEDBACK]
    assert images.rows.sources == ["s3://b/p1.jpg", "s3://b/p2.jpg"]

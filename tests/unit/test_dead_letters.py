"""`fruits dead-letters`: choosing letters and deciding which to replay, without a broker."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from core.records import DeadLetter, PhotoEvent, PhotoRef, ReducedFeatures, encode_record
from core.settings import Settings
from tools.deadletters import Found, Selection, parse_when, photo_of, plan_replay, record_types

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
SETTINGS = Settings()
TYPES = record_types(SETTINGS)


def letter(photo_id: str, *, stage="ingest", reason="internal_error", hours_ago=1.0, user="alice", topic=None,
           original: bytes | None = b"") -> DeadLetter:  # fmt: skip
    if original == b"":
        if topic in (None, SETTINGS.topic_photos):
            original = encode_record(PhotoEvent(photo_id, user, NOW, "eu", image=b"jpeg"))
        else:
            ref = PhotoRef(photo_id, user, NOW, NOW, "eu", f"s3://b/originals/{user}/{photo_id}")
            original = encode_record(ReducedFeatures(ref, "f", "v", [0.5]))
    return DeadLetter(
        source_topic=topic or SETTINGS.topic_photos, source_partition=0, source_offset=7, stage=stage,
        error_class=reason, error_message="ValueError raised in 3 tries", failed_at=NOW - timedelta(hours=hours_ago),
        photo_id=photo_id, original_key=photo_id.encode(), original_value=original,
    )  # fmt: skip


def test_times_are_iso_or_ago():
    assert parse_when("2026-11-26T10:00", NOW) == datetime(2026, 11, 26, 10, 0, tzinfo=timezone.utc)
    assert parse_when("2026-11-26T10:00+01:00", NOW) == datetime(2026, 11, 26, 9, 0, tzinfo=timezone.utc)
    assert parse_when("90m", NOW) == NOW - timedelta(minutes=90)
    assert parse_when("2d", NOW) == NOW - timedelta(days=2)
    with pytest.raises(ValueError, match="not a time"):
        parse_when("yesterday", NOW)


def test_a_selection_chooses_by_reason_stage_and_time():
    selection = Selection(frozenset({"internal_error"}), frozenset({"ingest"}), NOW - timedelta(hours=2), NOW)
    assert selection.matches(letter("a"))
    assert not selection.matches(letter("a", reason="undecodable_image"))
    assert not selection.matches(letter("a", stage="predict"))
    assert not selection.matches(letter("a", hours_ago=3))
    assert Selection().matches(letter("a", hours_ago=1000))
    with pytest.raises(ValueError):
        Selection(frozenset({"internal_eror"}))  # a typo is an error, not an empty selection


def test_the_photo_of_a_letter_is_its_original_s_user_and_id():
    assert photo_of(letter("a"), TYPES) == ("alice", "a")
    assert photo_of(letter("r", topic=SETTINGS.topic_reduced, user="bob"), TYPES) == ("bob", "r")
    assert photo_of(letter("x", original=b"\xc3\x01garbage"), TYPES) is None


def test_a_replay_skips_what_was_replayed_or_predicted_since():
    letters = [
        Found("dead[0]@1", letter("a")),
        Found("dead[0]@2", letter("b")),
        Found("dead[1]@1", letter("c")),
        Found("dead[1]@2", letter("d", original=None)),
        Found("dead[2]@1", letter("e", topic="somewhere.else")),
        Found("dead[2]@2", letter("b", user="bob")),  # bob's photo b is not alice's
    ]
    report = plan_replay(letters, replayed_positions={"dead[1]@1"}, predicted={("alice", "b")}, types=TYPES)
    assert [f.position for f in report.replayed] == ["dead[0]@1", "dead[2]@2"]
    assert [f.position for f in report.already_replayed] == ["dead[1]@1"]
    assert [f.position for f in report.already_predicted] == ["dead[0]@2"]
    assert [f.position for f in report.not_replayable] == ["dead[1]@2", "dead[2]@1"]

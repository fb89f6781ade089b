"""`fruits evaluate`: what a folder says a photo shows, and the report (no servers)."""

from dataclasses import replace
from pathlib import Path, PurePath

import pytest

from core.model import NOT_OURS, Answer
from tools.evaluate import Truth, expected_calibration_error, labelled_photos, render, report, truth_of


def test_truth_from_the_folders_above_a_photo():
    assert truth_of(PurePath("val/Fruit/Apple/Granny-Smith/x.jpg")) == Truth(None, "apple")
    assert truth_of(PurePath("val/Vegetables/Garlic/x.jpg")) == Truth(None, NOT_OURS)
    assert truth_of(PurePath("Test/Tomato Cherry Red 1/x.jpg")) == Truth("Tomato Cherry Red 1", "tomato")
    assert truth_of(PurePath("web/bell_pepper/x.jpg")) == Truth(None, "bell pepper")
    assert truth_of(PurePath("gen/not-a-fruit/x.png")) == Truth(None, NOT_OURS)
    with pytest.raises(KeyError):
        truth_of(PurePath("holiday/beach/x.jpg"))


def test_labelled_photos_names_the_folders_it_cannot_score(tmp_path: Path):
    (tmp_path / "photos" / "orange").mkdir(parents=True)
    (tmp_path / "photos" / "orange" / "a.jpg").write_bytes(b"x")
    assert labelled_photos(tmp_path / "photos") == [(tmp_path / "photos" / "orange" / "a.jpg", Truth(None, "orange"))]
    (tmp_path / "photos" / "cats").mkdir()
    (tmp_path / "photos" / "cats" / "b.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"cats \(1\)"):
        labelled_photos(tmp_path / "photos")
    with pytest.raises(ValueError, match="no images"):
        labelled_photos(_empty(tmp_path))


def _empty(tmp_path: Path) -> Path:
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty"


def answer(fruit_type: str, confidence: float, unsure: bool = False) -> Answer:
    return Answer("x", confidence, (), fruit_type, confidence, ((fruit_type, confidence),), unsure)


def test_report_per_type_confusions_and_not_ours():
    answers = [answer("apple", 0.9), answer("pear", 0.6), answer("apple", 0.3, unsure=True), answer("kiwi", 0.2, True)]
    truths = [Truth(None, "apple"), Truth(None, "apple"), Truth(None, "pear"), Truth(None, NOT_OURS)]
    result = report(answers, truths)
    assert result.per_type == {"apple": (2, 1, 0), "pear": (1, 0, 1)}
    assert result.confusions == [("apple", "pear", 1), ("pear", "apple", 1)]
    assert result.evaluation.foreign == 1 and result.evaluation.foreign_unsure == 1
    text = render(result, "title")
    assert "apple" in text and "not-ours photos unsure    100.0 %" in text


def test_expected_calibration_error():
    assert expected_calibration_error([0.95, 0.95], [True, True]) == pytest.approx(0.05)
    assert expected_calibration_error([0.55, 0.95], [False, True]) == pytest.approx(0.5 * 0.55 + 0.5 * 0.05)


def test_nonfruit_generator_is_seeded_and_evaluate_reads_it_as_not_ours(tmp_path: Path):
    from tools.nonfruit import KINDS, write_nonfruit

    first, again = write_nonfruit(tmp_path / "a", 8, seed=3), write_nonfruit(tmp_path / "b", 8, seed=3)
    names = sorted(p.name for p in first.iterdir())
    assert len(names) == 8 and {name.split("-")[0] for name in names} == set(KINDS)
    assert all((first / n).read_bytes() == (again / n).read_bytes() for n in names)
    other = write_nonfruit(tmp_path / "c", 8, seed=4)
    assert any((first / n).read_bytes() != (other / n).read_bytes() for n in names)
    assert {truth for _, truth in labelled_photos(tmp_path / "a")} == {Truth(None, NOT_OURS)}


def test_consume_shows_the_type_or_the_three_likeliest_when_unsure():
    from datetime import datetime, timezone

    from core.records import ModelVersions, PhotoRef, Prediction, ScoredLabel
    from tools.cli import prediction_line

    now = datetime.now(timezone.utc)
    base = Prediction(PhotoRef("p", "u", now, now, "eu", "s3://b/k"), now, "Apple Golden 1", 0.5, [],
                      ModelVersions("f", "v", "v"))  # fmt: skip
    assert prediction_line(base) == "Apple Golden 1 (50%)"  # a v1 prediction
    sure = replace(base, fruit_type="apple", type_confidence=0.93)
    assert prediction_line(sure) == "apple (93%), Apple Golden 1"
    types = [ScoredLabel("apple", 0.41), ScoredLabel("pear", 0.22), ScoredLabel("quince", 0.09), ScoredLabel("fig", 0.01)]
    unsure = replace(sure, unsure=True, top5_types=types)
    assert prediction_line(unsure) == "unsure: apple 41% · pear 22% · quince 9%"

"""The training recipe on small synthetic clusters: out-of-fold calibration, the unsure
threshold, the validation, and the promotion rule."""

import math

import numpy as np
import pytest

from core.evaluation import Evaluation
from core.model import NOT_OURS
from core.recipe import Labelled, Recipe, fit_calibrated, fit_temperature, fold_of_rows, not_worse, unsure_threshold


def clusters(seed: int = 0, per_class: int = 60):
    rng = np.random.default_rng(seed)
    centres = {"Apple Golden 1": (0, 0), "Apple Red 1": (0.6, 0), "Banana 1": (4, 4), "GS:Banana": (4.5, 3.5),
               NOT_OURS: (-4, 4)}  # fmt: skip
    labels = [label for label in centres for _ in range(per_class)]
    x = np.array([centres[label] for label in labels]) + rng.normal(0, 0.7, (len(labels), 2))
    types = {"Apple Golden 1": "apple", "Apple Red 1": "apple", "Banana 1": "banana", "GS:Banana": "banana",
             NOT_OURS: NOT_OURS}  # fmt: skip
    specimen = np.array([not label.startswith("GS:") and label != NOT_OURS for label in labels])
    return Labelled(x.astype(np.float32), labels, types, specimen)


def test_folds_are_contiguous_blocks_within_each_class():
    assert fold_of_rows(["a"] * 6 + ["b"] * 3, 3).tolist() == [0, 0, 1, 1, 2, 2, 0, 1, 2]


def test_calibrated_classifier_knows_types_and_keeps_specimens_sure():
    data = clusters()
    classifier, calibration, validation = fit_calibrated(data, Recipe(folds=3, max_specimen_unsure=0.05))
    assert classifier.temperature == calibration.temperature > 0
    assert classifier.unsure_below == calibration.unsure_below > 0
    assert dict(zip(classifier.labels, classifier.label_types))["GS:Banana"] == "banana"
    # Two apple varieties overlap, but their type is clear: type accuracy beats variety accuracy.
    assert validation.type_top1_accuracy > 0.95 and validation.type_top1_accuracy > validation.top1_accuracy
    assert validation.foreign == 60 and validation.foreign_unsure_share > 0.9
    specimens = int(data.specimen.sum())
    assert validation.images == specimens  # only the catalog varieties are scored at variety level
    answers = classifier.answers(classifier.predict_proba(data.x[data.specimen]))
    assert sum(a.unsure for a in answers) <= 0.05 * specimens + 2  # the threshold holds on the training rows too
    (far,) = classifier.answers(classifier.predict_proba(np.array([[-4.0, 4.5]], np.float32)))
    assert far.unsure and far.fruit_type in ("apple", "banana")


def test_temperature_and_threshold():
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 3, 2000)
    logits = rng.normal(0, 1, (2000, 3)).astype(np.float32)
    logits[np.arange(2000), truth] += 1.0
    assert fit_temperature(logits * 4, truth) == pytest.approx(4 * fit_temperature(logits, truth), rel=0.1)
    assert unsure_threshold([0.1, 0.2, 0.3, 0.4], 0.25) == 0.2  # one of four may fall below
    assert unsure_threshold([0.1, 0.2, 0.3, 0.4], 0.0) == 0.1
    assert unsure_threshold([], 0.02) == 0.0


def test_a_refit_is_promoted_only_if_not_worse():
    current = Evaluation(images=100, top1_correct=95, typed=100, type_top1_correct=96, foreign=10, foreign_unsure=9)
    same = Evaluation(images=100, top1_correct=95, typed=100, type_top1_correct=96, foreign=10, foreign_unsure=9)
    assert not_worse(same, current, 0.0)[0]
    worse = Evaluation(images=100, top1_correct=95, typed=100, type_top1_correct=90, foreign=10, foreign_unsure=9)
    ok, why = not_worse(worse, current, 0.005)
    assert not ok and "type_top1_accuracy 0.9000 < 0.9600" in why
    assert not_worse(Evaluation(), Evaluation(), 0.0)[0]  # nothing to compare: nothing is worse
    assert math.isnan(Evaluation().type_top1_accuracy)


def test_augmented_copies_are_trained_on_but_never_answered_and_share_their_photos_fold():
    from core.recipe import AUGMENTED, COPY_MARK, GROCERYSTORE, TrainingRows

    photos = TrainingRows(["GS:Banana"] * 6 + [NOT_OURS] * 6, ["banana"] * 6 + [NOT_OURS] * 6,
                          [GROCERYSTORE] * 12, [f"p{i}.jpg" for i in range(12)])  # fmt: skip
    copies = TrainingRows(["GS:Banana"] * 2, ["banana"] * 2, [AUGMENTED] * 2, [f"p5.jpg{COPY_MARK}0", f"p0.jpg{COPY_MARK}1"])
    data = (photos + copies).labelled(np.zeros((14, 2), np.float32))
    assert data.copy_of.tolist() == [-1] * 12 + [5, 0]
    assert data.originals().sum() == 12
    with pytest.raises(ValueError, match="no photo"):
        (photos + TrainingRows(["GS:Banana"], ["banana"], [AUGMENTED], [f"gone.jpg{COPY_MARK}0"])).labelled(
            np.zeros((13, 2), np.float32))

    # A copy far from its class would be misread if it were answered: validation must not count it.
    base = clusters()
    stray = np.array([[-4.0, 4.0]] * 30, np.float32)  # where NOT_OURS lives, labelled Banana 1
    with_copies = Labelled(
        np.concatenate([base.x, stray]), [*base.labels, *["Banana 1"] * 30], base.label_types,
        np.concatenate([base.specimen, np.ones(30, bool)]),
        np.concatenate([np.full(len(base.labels), -1), np.full(30, base.labels.index("Banana 1"))]),
    )  # fmt: skip
    _, _, plain = fit_calibrated(base, Recipe(folds=3))
    _, _, validation = fit_calibrated(with_copies, Recipe(folds=3))
    assert validation.images == plain.images and validation.typed == plain.typed

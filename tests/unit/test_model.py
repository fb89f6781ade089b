import json
from dataclasses import replace

import numpy as np
import pytest

from core.evaluation import Evaluation, evaluate
from core.manifest import BUNDLE_FORMAT, Manifest, PcaStream, TrainedOn
from core.model import NOT_OURS, Classifier, ModelBundle, ModelStore, Pca, PcaStats
from tests.unit.fakes import MemoryS3


def data(n=400, d=12, seed=0):
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(d, d))
    return rng.normal(size=(n, d)) * np.linspace(5, 0.1, d) @ basis + 3.0


def test_pca_from_stats_matches_svd():
    x = data()
    stats = PcaStats.empty(x.shape[1])
    stats.add(x)
    pca = stats.fit(min_explained_variance=1.0)
    centred = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    for mine, reference in zip(pca.components, vt):
        assert abs(float(mine @ reference)) > 0.9999
    np.testing.assert_allclose(pca.explained_variance_ratio, s**2 / (s**2).sum(), rtol=1e-5)


def test_stats_merge_equals_one_pass():
    x = data()
    whole, left, right = PcaStats.empty(12), PcaStats.empty(12), PcaStats.empty(12)
    whole.add(x)
    left.add(x[:150])
    right.add(x[150:])
    merged = left.merge(right)
    assert merged.count == whole.count
    np.testing.assert_allclose(merged.outer, whole.outer)
    np.testing.assert_allclose(merged.fit(0.9).components, whole.fit(0.9).components, atol=1e-6)


def test_k_is_the_fewest_components_reaching_the_target():
    stats = PcaStats.empty(12)
    stats.add(data())
    full = stats.fit(1.0)
    cumulative = np.cumsum(full.explained_variance_ratio)
    pca = stats.fit(0.9)
    assert cumulative[pca.k - 1] >= 0.9 and (pca.k == 1 or cumulative[pca.k - 2] < 0.9)
    assert pca.transform(data()[:5]).shape == (5, pca.k)


def test_fit_needs_two_vectors():
    stats = PcaStats.empty(3)
    stats.add(np.ones((1, 3)))
    with pytest.raises(ValueError, match="at least 2"):
        stats.fit(0.9)


def test_classifier_softmax():
    clf = Classifier(("a", "b"), np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32), np.zeros(2, np.float32))
    p = clf.predict_proba(np.array([[3.0, 1.0], [0.0, 0.0]]))
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-6)
    assert p[0, 0] > p[0, 1] and p[1, 0] == pytest.approx(0.5)


# --- Evaluation ---------------------------------------------------------------------------------


def identity_bundle(classes: int = 6, version: str = "20240501T120000Z-abcdef") -> ModelBundle:
    """PCA = identity and logits = the input: feature j is the score of class c<j>."""
    pca = Pca(np.zeros(classes, np.float32), np.eye(classes, dtype=np.float32), np.full(classes, 1 / classes))
    labels = tuple(f"c{j}" for j in range(classes))
    return ModelBundle(version, "model@abc", pca, Classifier(labels, np.eye(classes, dtype=np.float32),
                                                             np.zeros(classes, np.float32)))  # fmt: skip


def ranked_row(order: list[int], classes: int = 6) -> np.ndarray:
    """Scores putting class order[0] first, order[1] second, ..."""
    row = np.zeros(classes, np.float32)
    for rank, j in enumerate(order):
        row[j] = classes - rank
    return row


def test_evaluate_counts_top1_and_top5():
    bundle = identity_bundle()
    features = np.stack([
        ranked_row([0, 1, 2, 3, 4, 5]),  # c0: first
        ranked_row([1, 2, 0, 3, 4, 5]),  # c0: third, in the top 5
        ranked_row([1, 2, 3, 4, 5, 0]),  # c0: sixth, not in the top 5
        ranked_row([3, 0, 1, 2, 4, 5]),  # "unknown": never right
    ])  # fmt: skip
    labels = ["c0", "c0", "c0", "unknown"]
    scores = evaluate(bundle, features, labels)
    # Here every class is its own type (none is in the catalog), so types score like labels.
    assert scores == Evaluation(images=4, top1_correct=1, top5_correct=2,
                                typed=4, type_top1_correct=1, type_top5_correct=2, sure_correct=1)  # fmt: skip
    assert scores.top1_accuracy == 0.25 and scores.top5_accuracy == 0.5
    # Counts merge exactly (the Spark trainer scores each partition and adds them up).
    assert evaluate(bundle, features[:1], labels[:1]).merge(evaluate(bundle, features[1:], labels[1:])) == scores
    assert scores.to_dict().items() >= {"images": 4, "top1_correct": 1, "top5_correct": 2,
                                     "top1_accuracy": 0.25, "top5_accuracy": 0.5, "unsure_share": 0.0,
                                     "foreign_unsure_share": None}.items()  # fmt: skip
    assert Evaluation.from_dict(scores.to_dict()) == scores


def test_evaluate_with_fewer_classes_than_k_and_without_images():
    bundle = identity_bundle(classes=3)
    scores = evaluate(bundle, np.stack([ranked_row([2, 1, 0], 3)]), ["c0"])
    assert scores == Evaluation(1, 0, 1, typed=1, type_top5_correct=1)  # top-5 of 3 classes: every class
    empty = evaluate(bundle, np.zeros((0, 3)), [])
    assert empty == Evaluation() and empty.to_dict()["top1_accuracy"] is None
    with pytest.raises(ValueError, match="2 feature vectors but 1 labels"):
        evaluate(bundle, np.zeros((2, 3)), ["c0"])


# --- Manifest -----------------------------------------------------------------------------------


def described(bundle: ModelBundle, **extra) -> ModelBundle:
    manifest = Manifest.describe(
        bundle, trained_on=TrainedOn("local", "data/Training", 12, 6, per_class_limit=2),
        min_explained_variance=0.98, training_seconds=3.21, **extra,
    )  # fmt: skip
    return replace(bundle, manifest=manifest)


def test_manifest_round_trips_through_json():
    bundle = identity_bundle()
    scores = Evaluation(10, 9, 10)
    manifest = described(
        bundle, training_features="s3://lake/training_features/version=v", evaluation=scores,
        evaluated_on="data/Test", parent_version="v0", pca_stream=PcaStream("photo-features", 500, 7),
    ).manifest  # fmt: skip
    assert Manifest.from_json(manifest.to_json()) == manifest
    data = json.loads(manifest.to_json())
    assert data["format"] == BUNDLE_FORMAT and data["created_at"].endswith("Z")
    assert data["pca"] == {"k": 6, "input_dim": 6, "explained_variance": pytest.approx(1.0),
                           "min_explained_variance": 0.98,
                           "stream": {"topic": "photo-features", "rows": 500, "through_batch_id": 7}}  # fmt: skip
    assert data["classifier"] == {"type": "multinomial_logistic_regression", "classes": 6}
    assert data["evaluation"]["top1_accuracy"] == 0.9 and data["training_seconds"] == 3.2
    # A later release's optional fields are ignored, not fatal.
    assert Manifest.from_dict(data | {"something_new": 1}) == manifest


def test_the_format_is_not_overridable():
    bundle = described(identity_bundle())
    with pytest.raises(TypeError):
        replace(bundle.manifest, format=99)  # not a field: nothing can carry another format
    store = ModelStore(MemoryS3(), "models")
    store.save(bundle)
    key = "models", f"bundles/{bundle.version}/manifest.json"
    assert json.loads(store.client.objects[key])["format"] == BUNDLE_FORMAT
    assert store.load(bundle.version).manifest == bundle.manifest
    for other in (99, None, True):
        store.client.objects[key] = json.dumps(bundle.manifest.to_dict() | {"format": other}).encode()
        with pytest.raises(ValueError, match=f"bundle {bundle.version}: manifest format {other!r}"):
            store.load(bundle.version)


def test_save_needs_a_manifest_that_describes_the_bundle():
    bundle = identity_bundle()
    with pytest.raises(ValueError, match="no manifest"):
        ModelStore(MemoryS3(), "models").save(bundle)
    other = described(identity_bundle(classes=4)).manifest
    with pytest.raises(ValueError, match="the manifest describes"):
        replace(bundle, manifest=other)
    with pytest.raises(ValueError, match="unknown training engine"):
        TrainedOn("laptop", "data", 1, 1)
    with pytest.raises(ValueError, match="go together"):
        described(bundle, evaluation=Evaluation(1, 1, 1))


FORMAT_1 = {
    "format": 1, "version": "20240501T120000Z-abcdef", "featurizer_id": "model@abc",
    "pca": {"k": 6, "input_dim": 6, "explained_variance": 1.0},
    "classifier": {"type": "multinomial_logistic_regression", "classes": 6},
    "pca_selection": {"min_explained_variance": 0.98}, "per_class_limit": None, "training_seconds": 4.0,
    "trained_on": {"path": "data", "images": 12, "classes": 6},
    "evaluation": {"path": "data/Test", "images": 6, "top1_accuracy": 1.0},
}  # fmt: skip


def test_reads_the_three_shapes_of_format_1():
    local = Manifest.from_dict(FORMAT_1 | {"training_features": "s3://lake/tf"})
    assert local.trained_on == TrainedOn("local", "data", 12, 6)
    assert local.created_at == "2024-05-01T12:00:00Z" and local.training_features == "s3://lake/tf"
    assert local.evaluation is None and local.pca.min_explained_variance == 0.98  # format 1 had no top-5
    spark = Manifest.from_dict(FORMAT_1 | {"engine": {"name": "spark", "spark": "3.5.1", "master": "local[2]"}})
    assert spark.trained_on.engine == "spark"
    streamed = Manifest.from_dict(FORMAT_1 | {
        "trained_on": {"pca": {"source": "stream", "topic": "photo-features", "rows": 60, "through_batch_id": 9},
                       "classifier": {"path": "s3://lake/tf", "images": 12, "classes": 6}},
        "training_accuracy": 1.0, "previous_version": "v0",
    })  # fmt: skip
    assert streamed.trained_on == TrainedOn("streaming", "s3://lake/tf", 12, 6)
    assert streamed.pca.stream == PcaStream("photo-features", 60, 9) and streamed.parent_version == "v0"
    # A format-1 bundle in the store still loads (its files are the same).
    store = ModelStore(MemoryS3(), "models")
    bundle = described(identity_bundle())
    store.save(bundle)
    store.client.objects["models", f"bundles/{bundle.version}/manifest.json"] = json.dumps(FORMAT_1).encode()
    assert store.load(bundle.version).manifest == Manifest.from_dict(FORMAT_1)
    with pytest.raises(ValueError, match="malformed format-1 manifest"):
        Manifest.from_dict({k: v for k, v in FORMAT_1.items() if k != "pca_selection"})


def test_store_lists_bundles_promotes_and_rolls_back():
    store = ModelStore(MemoryS3(), "models")
    versions = ["20240501T120000Z-aaaaaa", "20240502T120000Z-bbbbbb", "20240503T120000Z-cccccc"]
    for version in versions:
        store.save(described(identity_bundle(version=version)))
    store.save(described(identity_bundle(version="20240504T120000Z-dddddd")), make_current=False)  # a candidate
    assert store.versions() == [*versions, "20240504T120000Z-dddddd"]
    assert store.current_version() == versions[2]
    assert store.previous_versions() == [versions[1], versions[0]]
    store.set_current("20240504T120000Z-dddddd")  # promote the candidate
    store.set_current("20240504T120000Z-dddddd")  # twice: no duplicate in the history
    assert store.previous_versions() == [versions[2], versions[1], versions[0]]
    assert store.rollback() == versions[2] and store.current_version() == versions[2]
    assert store.rollback() == versions[1] and store.rollback() == versions[0]
    with pytest.raises(ValueError, match="no earlier current bundle"):
        store.rollback()


def test_an_old_pointer_without_history_still_reads():
    store = ModelStore(MemoryS3(), "models")
    store.client.put_object(Bucket="models", Key="current.json", Body=b'{"version": "v1"}')
    assert store.current_version() == "v1" and store.previous_versions() == []
    store.set_current("v2")
    assert store.previous_versions() == ["v1"]


def answer_of(classifier: Classifier, logits: list[float]):
    (answer,) = classifier.answers(classifier.predict_proba(np.array([logits]) @ np.linalg.pinv(classifier.coef.T)))
    return answer


def test_types_sum_their_varieties_and_the_label_is_the_best_variety_of_that_type():
    labels = ("Apple Golden 1", "Apple Red 1", "Banana 1", NOT_OURS)
    classifier = Classifier(labels, np.eye(4, dtype=np.float32), np.zeros(4, np.float32))
    assert classifier.label_types == ("apple", "apple", "banana", NOT_OURS)  # from the catalog
    answer = answer_of(classifier, [1.0, 0.9, 1.2, -5.0])  # banana is the likeliest label, apple the likeliest type
    assert answer.fruit_type == "apple" and answer.label == "Apple Golden 1" and not answer.unsure
    assert answer.type_confidence == pytest.approx(answer.top5_types[0][1])
    assert answer.type_confidence > 0.5 > answer.confidence
    assert [t for t, _ in answer.top5_types] == ["apple", "banana"]  # NOT_OURS is never a type to show
    assert [label for label, _ in answer.top5][0] == "Banana 1" and len(answer.top5) == 3


def test_unsure_below_the_threshold_or_when_nothing_ours_is_likelier():
    labels = ("Apple Golden 1", "Banana 1", NOT_OURS)
    plain = Classifier(labels, np.eye(3, dtype=np.float32), np.zeros(3, np.float32))
    assert not answer_of(plain, [1.0, 0.8, 0.0]).unsure
    assert answer_of(replace(plain, unsure_below=0.5), [1.0, 0.8, 0.0]).unsure  # apple at ~0.44
    assert answer_of(plain, [0.0, 0.0, 3.0]).unsure  # looks like nothing of ours


def test_temperature_softens_the_probabilities_without_changing_the_ranking():
    labels = ("Apple Golden 1", "Banana 1")
    sharp = Classifier(labels, np.eye(2, dtype=np.float32), np.zeros(2, np.float32))
    soft = replace(sharp, temperature=4.0)
    x = np.array([[2.0, 0.0]])
    assert sharp.predict_proba(x)[0, 0] > soft.predict_proba(x)[0, 0] > 0.5


def test_calibration_and_types_survive_the_store():
    store = ModelStore(MemoryS3(), "models")
    bundle = described(identity_bundle())
    calibrated = replace(bundle, classifier=replace(bundle.classifier, temperature=1.5, unsure_below=0.4,
                                                      label_types=("a", "a", "b", "b", "c", NOT_OURS)))
    store.save(calibrated)
    loaded = store.load(calibrated.version).classifier
    assert (loaded.temperature, loaded.unsure_below) == (1.5, pytest.approx(0.4))
    assert loaded.label_types == ("a", "a", "b", "b", "c", NOT_OURS)


def test_score_counts_types_unsure_answers_and_photos_of_nothing_ours():
    from core.evaluation import score
    from core.model import Answer

    def answer(label, fruit_type, unsure, top_types=()):
        return Answer(label, 0.5, ((label, 0.5),), fruit_type, 0.5, ((fruit_type, 0.5), *top_types), unsure)

    answers = [
        answer("Apple Golden 1", "apple", False),  # right variety and type
        answer("Apple Red 1", "apple", True),  # right type, but unsure
        answer("Pear 1", "pear", False, (("apple", 0.2),)),  # wrong type, apple second
        answer("Banana 1", "banana", True),  # a photo of garlic, rightly unsure
        answer("Banana 1", "banana", False),  # a photo of garlic, wrongly sure
    ]
    scores = score(answers, ["Apple Golden 1", None, "Apple Golden 1", None, None],
                   ["apple", "apple", "apple", NOT_OURS, NOT_OURS])  # fmt: skip
    assert scores == Evaluation(images=2, top1_correct=1, top5_correct=1, typed=3, type_top1_correct=2,
                                type_top5_correct=3, unsure=1, sure_correct=1, foreign=2, foreign_unsure=1)  # fmt: skip
    assert scores.sure_accuracy == 0.5 and scores.unsure_share == pytest.approx(1 / 3)
    assert scores.foreign_unsure_share == 0.5

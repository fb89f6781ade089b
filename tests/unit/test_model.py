import numpy as np
import pytest

from core.model import Classifier, PcaStats


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

"""The pure transforms of preprocess, featurize, reduce and predict."""

from dataclasses import replace
from datetime import datetime, timezone

import numpy as np
import pytest

from core.catalog import load_types
from core.imaging import MODEL_INPUT_SIZE
from core.errors import RecordError
from core.model import NOT_OURS, Classifier, ModelBundle, Pca
from core.records import IngestedPhoto, ModelVersions, PhotoFeatures, PhotoRef, PreprocessedPhoto, ReducedFeatures
from services.featurize.transform import featurize_batch
from services.predict.transform import predict_batch
from services.preprocess.transform import preprocess_photo
from services.reduce.transform import reduce_batch
from tests import images

T0 = datetime(2026, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
S = MODEL_INPUT_SIZE
REF = PhotoRef("p", "u", T0, T0, "eu", "s3://b/k.jpg")


def test_preprocess_inline_and_by_reference():
    def ingested(image):
        return IngestedPhoto(REF, "image/jpeg", 100, 100, "00" * 32, image)

    inline = preprocess_photo(ingested(images.jpeg()), read_original=None)
    assert inline.shape == [S, S, 3] and len(inline.tensor) == S * S * 3 and inline.photo == REF
    by_ref = preprocess_photo(ingested(None), read_original=lambda uri: images.jpeg(300, 300) if uri == REF.original_uri else b"")
    assert by_ref.shape == [S, S, 3] and by_ref.photo.original_uri == "s3://b/k.jpg"


@pytest.mark.parametrize("make", [images.located_heic, images.located_avif, images.located_mpo])
def test_preprocess_decodes_phone_formats(make):
    out = preprocess_photo(IngestedPhoto(REF, "image/jpeg", 64, 64, "00" * 32, make()), read_original=None)
    assert out.shape == [S, S, 3] and len(out.tensor) == S * S * 3


def test_featurize_one_call_per_batch_and_bad_tensors_isolated():
    calls = []

    def fake_model(batch):
        calls.append(batch.shape)
        return batch.reshape(len(batch), -1)[:, :4].astype(np.float32)

    good = PreprocessedPhoto(REF, bytes(range(S)) * S * 3, [S, S, 3])
    bad = PreprocessedPhoto(REF, b"\x00" * 10, [S, S, 3])
    wrong_shape = PreprocessedPhoto(REF, b"\x00" * S * S * 3, [3, S, S])
    out = featurize_batch([good, bad, good, wrong_shape], fake_model, "model@abc")
    assert calls == [(2, S, S, 3)]
    assert out[0].features == [0.0, 1.0, 2.0, 3.0] and out[0].featurizer_id == "model@abc" and out[0].photo == REF
    assert out[2].features == out[0].features
    assert isinstance(out[1], RecordError) and out[1].reason == "bad_tensor"
    assert isinstance(out[3], RecordError) and out[3].reason == "bad_tensor"


def make_bundle(version="v1"):
    pca = Pca(np.ones(4, np.float32), np.eye(4, dtype=np.float32)[:2], np.array([0.6, 0.3]))
    classifier = Classifier(
        ("Banana 1", "Apple Braeburn 1", "Kiwi 1", "Lemon 1", "Limes 1", NOT_OURS),
        np.array([[5, 0], [0, 5], [1, 1], [0, 0], [-1, 0], [0, -1]], dtype=np.float32),
        np.zeros(6, np.float32),
    )
    return ModelBundle(version, "model@abc", pca, classifier)


def test_reduce_tags_version_and_rejects_wrong_dimension():
    out = reduce_batch(
        [PhotoFeatures(REF, "m", [3.0, 1.0, 9.0, 9.0]), PhotoFeatures(REF, "m", [1.0])],
        make_bundle().pca, "v1",
    )
    assert out[0].features == [2.0, 0.0] and out[0].pca_version == "v1" and out[0].photo == REF
    assert isinstance(out[1], RecordError) and out[1].reason == "bad_features"


def test_predict_uses_the_bundle_named_by_the_record():
    bundles = {"v1": make_bundle("v1")}

    def bundle_of(version):
        if version not in bundles:
            raise RecordError("unknown_model_version", version)
        return bundles[version]

    reduced = ReducedFeatures(REF, "m", "v1", [2.0, 0.0])
    out = predict_batch(
        [reduced, replace(reduced, pca_version="gone"), replace(reduced, features=[1.0, 2.0, 3.0])],
        bundle_of, load_types(), T0,
    )
    first = out[0]
    assert first.label == "Banana 1" and 0.5 < first.confidence <= 1 and first.photo == REF
    assert [t.label for t in first.top5][:2] == ["Banana 1", "Kiwi 1"] and len(first.top5) == 5
    assert first.top5[0].confidence == first.confidence
    assert first.model_versions == ModelVersions("m", "v1", "v1")
    assert first.fruit_type == "banana" and first.type_confidence == first.confidence and not first.unsure
    assert [t.label for t in first.top5_types][:2] == ["banana", "kiwi"] and len(first.top5_types) == 5
    assert "banana" in first.fruit.common_name.lower() and first.fruit.nutrition.energy_kcal > 0
    assert out[1].reason == "unknown_model_version"
    assert out[2].reason == "bad_features"


def test_a_photo_of_nothing_ours_is_unsure_and_has_no_fruit_info():
    reduced = ReducedFeatures(REF, "m", "v1", [0.0, -3.0])
    (out,) = predict_batch([reduced], lambda v: make_bundle(v), load_types(), T0)
    assert out.unsure and out.fruit is None
    assert NOT_OURS not in [t.label for t in out.top5_types] + [t.label for t in out.top5] + [out.fruit_type]

"""The ONNX featurizer wrapper on the committed models (onnxruntime only, no servers)."""

import numpy as np
import pytest

from core.featurizer import CHUNK, Featurizer
from core.imaging import MODEL_INPUT_SIZE
from core.settings import PROJECT_ROOT, Settings

MODELS = PROJECT_ROOT / "core" / "models"


def test_the_default_featurizer_takes_what_preprocess_makes():
    featurizer = Featurizer(Settings().featurizer_path, threads=1)
    assert featurizer.input_size == MODEL_INPUT_SIZE
    featurizer.check_input_size(MODEL_INPUT_SIZE)


def test_a_featurizer_of_another_size_is_refused_with_a_clear_error():
    reference = Featurizer(MODELS / "mobilenetv2_100px.onnx", threads=1)
    with pytest.raises(ValueError, match="takes 100×100 images but preprocess makes 192×192"):
        reference.check_input_size(192)


def test_chunked_calls_give_the_features_of_one_call():
    featurizer = Featurizer(MODELS / "mobilenetv2_100px.onnx", threads=1)
    images = np.random.default_rng(0).integers(0, 256, (2 * CHUNK + 3, 100, 100, 3), dtype=np.uint8)
    together = featurizer(images)
    one_by_one = np.concatenate([featurizer(images[i : i + 1]) for i in range(len(images))])
    assert together.shape == (2 * CHUNK + 3, 1280)
    np.testing.assert_allclose(together, one_by_one, rtol=1e-4, atol=1e-4)

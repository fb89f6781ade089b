import io

import numpy as np
import pytest
from PIL import Image

from core.errors import RecordError
from core.imaging import MODEL_INPUT_SIZE, inspect_image, preprocess, sniff_content_type, strip_gps
from tests import images

MAX_PIXELS = 40_000_000


def test_sniffs_real_types_not_claims():
    assert sniff_content_type(images.jpeg()) == "image/jpeg"
    assert sniff_content_type(images.png()) == "image/png"
    webp = io.BytesIO()
    Image.new("RGB", (8, 8)).save(webp, format="WEBP")
    assert sniff_content_type(webp.getvalue()) == "image/webp"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty_image"),
        (images.PDF, "unsupported_type"),
        (b"hello world, not an image", "unsupported_type"),
        (images.corrupt_jpeg(), "undecodable_image"),
        (images.truncated_jpeg(), "undecodable_image"),
    ],
    ids=["empty", "pdf", "text", "corrupt", "truncated"],
)
def test_rejects_bad_payloads(data, reason):
    with pytest.raises(RecordError) as caught:
        inspect_image(data, MAX_PIXELS)
    assert caught.value.reason == reason


def test_refuses_decompression_bomb_before_decoding():
    with pytest.raises(RecordError) as caught:
        inspect_image(images.huge_png(), MAX_PIXELS)
    assert caught.value.reason == "image_too_large"


def test_own_pixel_limit_applies_below_pillows():
    with pytest.raises(RecordError, match="exceeds the limit"):
        inspect_image(images.jpeg(300, 200), max_pixels=50_000)
    assert inspect_image(images.jpeg(300, 200), max_pixels=60_000).width == 300


def test_strip_gps_keeps_other_exif_and_pixels():
    original = images.jpeg(gps=True)
    assert images.GPS_IFD in Image.open(io.BytesIO(original)).getexif()
    stripped = strip_gps(original, "image/jpeg")
    exif = Image.open(io.BytesIO(stripped)).getexif()
    assert images.GPS_IFD not in exif
    assert exif[0x010F] == "FruitsTestCam"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(original))), np.asarray(Image.open(io.BytesIO(stripped))))


def test_strip_gps_leaves_clean_images_untouched():
    clean = images.jpeg()
    assert strip_gps(clean, "image/jpeg") is clean


def test_preprocess_shape_padding_and_alpha():
    wide = preprocess(images.jpeg(200, 100, colour=(0, 0, 255)), size=100)
    assert wide.shape == (100, 100, 3) and wide.dtype == np.uint8
    assert tuple(wide[0, 50]) == (255, 255, 255)  # padded top row is white
    assert abs(int(wide[50, 50, 2]) - 255) < 10 and wide[50, 50, 0] < 10
    assert preprocess(images.jpeg(200, 100)).shape == (MODEL_INPUT_SIZE, MODEL_INPUT_SIZE, 3)  # the model's size
    transparent = preprocess(images.png(50, 50, "RGBA"))
    assert (transparent == 255).all()  # fully transparent → white background


def test_preprocess_applies_exif_orientation():
    # Orientation 6 = rotate 90° clockwise to display: a 200×100 image stands up.
    upright = preprocess(images.jpeg(200, 100, colour=(0, 255, 0), orientation=6), size=100)
    assert tuple(upright[50, 5]) == (255, 255, 255)  # left margin padded after rotation
    assert upright[5, 50, 1] > 245


def test_preprocess_matches_dataset_native_size_exactly():
    source = np.random.default_rng(0).integers(0, 255, (100, 100, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(source).save(out, format="PNG")
    assert np.array_equal(preprocess(out.getvalue(), size=100), source)

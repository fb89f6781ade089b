import io
import re
import struct

import numpy as np
import pytest
from PIL import Image

from core import imaging
from core.errors import RecordError
from core.imaging import MODEL_INPUT_SIZE, ImageInfo, inspect_image, preprocess, sniff_content_type
from tests import images

MAX_PIXELS = 40_000_000


def test_sniffs_real_types_not_claims():
    assert sniff_content_type(images.jpeg()) == "image/jpeg"
    assert sniff_content_type(images.png()) == "image/png"
    webp = io.BytesIO()
    Image.new("RGB", (8, 8)).save(webp, format="WEBP")
    assert sniff_content_type(webp.getvalue()) == "image/webp"
    assert sniff_content_type(images.located_heic()) == "image/heic"
    assert sniff_content_type(images.located_avif()) == "image/avif"
    assert sniff_content_type(images.located_mpo()) == "image/jpeg"


def ftyp(major: bytes, *compatible: bytes) -> bytes:
    box = major + b"\x00\x00\x00\x00" + b"".join(compatible)
    return struct.pack(">I", 8 + len(box)) + b"ftyp" + box + bytes(64)


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (ftyp(b"heic", b"mif1", b"heic"), "image/heic"),
        (ftyp(b"heix", b"mif1"), "image/heic"),
        (ftyp(b"mif1", b"heic", b"miaf"), "image/heic"),
        (ftyp(b"msf1", b"hevc"), "image/heic"),
        (ftyp(b"mif1", b"miaf"), "image/heif"),
        (ftyp(b"avif", b"mif1", b"miaf"), "image/avif"),
        (ftyp(b"mif1", b"avif"), "image/avif"),
        (ftyp(b"avis", b"msf1"), "image/avif"),
    ],
)
def test_sniffs_heif_and_avif_from_ftyp_brands(data, content_type):
    assert sniff_content_type(data) == content_type


def test_iso_media_that_is_not_an_image_is_unsupported():
    with pytest.raises(RecordError) as caught:
        sniff_content_type(ftyp(b"isom", b"iso2", b"mp41"))
    assert caught.value.reason == "unsupported_type"


@pytest.mark.parametrize(
    "data",
    [
        b"PRIVATE-7f3a9c\x01\x02\x03\x04 qzxv-SECRET-kj38",
        bytes(range(256)) * 4,
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"SECRpayload-of-a-private-object" + bytes(40),
        images.located_heic()[:300],
    ],
    ids=["text", "binary", "png_with_a_foreign_chunk", "truncated_heic"],
)
def test_error_messages_never_quote_the_payload(data):
    with pytest.raises(RecordError) as caught:
        inspect_image(data, MAX_PIXELS)
    message = str(caught.value)
    if caught.value.reason == "unsupported_type" and data[4:8] != b"ftyp":
        assert f"{len(data):,} bytes" in message
    text = message.encode("latin-1", "replace").lower()
    for start in range(0, len(data) - 3):
        window = data[start : start + 4]
        if re.fullmatch(rb"[a-zA-Z]{4}", window) is None:  # words of our own messages may match plain letters
            assert window.lower() not in text
            assert window.hex() not in message and window.hex(" ") not in message
    assert not re.search(r"\\x[0-9a-f]{2}|b'|0x[0-9a-f]{6,}", message)


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


def test_accepts_phone_formats_at_their_size():
    assert inspect_image(images.located_mpo(), MAX_PIXELS) == ImageInfo("image/jpeg", 64, 48)
    assert inspect_image(images.located_heic(), MAX_PIXELS) == ImageInfo("image/heic", 64, 64)
    assert inspect_image(images.located_avif(), MAX_PIXELS) == ImageInfo("image/avif", 64, 32)


@pytest.mark.parametrize("make", [images.located_heic, images.located_avif], ids=["heic", "avif"])
@pytest.mark.parametrize("keep", [0.5, 0.98], ids=["half", "all_but_the_end"])
def test_truncated_heif_and_avif_are_undecodable(make, keep):
    data = make()
    with pytest.raises(RecordError) as caught:
        inspect_image(data[: int(len(data) * keep)], MAX_PIXELS)
    assert caught.value.reason == "undecodable_image"


def with_dimensions(data: bytes, width: int, height: int) -> bytes:
    """``data`` whose ispe boxes (HEIF/AVIF image sizes) claim ``width``×``height``."""
    patched = bytearray(data)
    boxes = [match.start() for match in re.finditer(b"ispe", data)]
    assert boxes
    for box in boxes:  # fourcc, version and flags, then width and height
        patched[box + 8 : box + 16] = struct.pack(">II", width, height)
    return bytes(patched)


@pytest.mark.parametrize("make", [images.located_heic, images.located_avif], ids=["heic", "avif"])
def test_huge_heif_and_avif_headers_are_refused_before_decoding(make, monkeypatch):
    decoded = []
    monkeypatch.setattr(imaging, "decode", lambda image, content_type: decoded.append(image.size))
    huge = with_dimensions(make(), 8000, 8000)  # 64 Mpx claimed
    with pytest.raises(RecordError) as caught:
        inspect_image(huge, MAX_PIXELS)
    assert caught.value.reason == "image_too_large" and decoded == []
    inspect_image(huge, max_pixels=100_000_000)  # under a higher limit it would be decoded
    assert decoded == [(8000, 8000)]


def test_refuses_decompression_bomb_before_decoding():
    with pytest.raises(RecordError) as caught:
        inspect_image(images.huge_png(), MAX_PIXELS)
    assert caught.value.reason == "image_too_large"


def test_own_pixel_limit_applies_below_pillows():
    with pytest.raises(RecordError, match="exceeds the limit"):
        inspect_image(images.jpeg(300, 200), max_pixels=50_000)
    assert inspect_image(images.jpeg(300, 200), max_pixels=60_000).width == 300


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


@pytest.mark.parametrize("make", [images.located_heic, images.located_avif], ids=["heic", "avif"])
def test_preprocess_decodes_heif_and_avif(make):
    tensor = preprocess(make(), size=64)
    assert tensor.shape == (64, 64, 3)
    red, blue = tensor[32, 8].astype(int), tensor[32, 56].astype(int)
    assert red[0] > 170 and red[2] < 60 and blue[2] > 170 and blue[0] < 60


def test_avif_of_the_generic_heif_brand_is_read_as_avif():
    avif = images.located_avif()
    generic = avif[:8] + b"mif1" + avif[12:]  # major brand mif1, avif among the compatible brands
    assert inspect_image(generic, MAX_PIXELS) == ImageInfo("image/avif", 64, 32)
    assert np.array_equal(preprocess(generic, size=64), preprocess(avif, size=64))


def test_preprocess_applies_avif_rotation():
    # Orientation 6 (irot in the AVIF): the 64×32 image stands up, red on top.
    upright = preprocess(images.located_avif(orientation=6), size=64)
    assert tuple(upright[32, 4]) == (255, 255, 255)  # padded left margin
    assert upright[8, 32, 0] > 170 and upright[56, 32, 2] > 170


def test_preprocess_matches_dataset_native_size_exactly():
    source = np.random.default_rng(0).integers(0, 255, (100, 100, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(source).save(out, format="PNG")
    assert np.array_equal(preprocess(out.getvalue(), size=100), source)


def test_a_large_jpeg_is_checked_at_a_reduced_scale_but_reported_at_its_size():
    data = images.jpeg(1600, 1200)
    assert inspect_image(data, MAX_PIXELS) == ImageInfo("image/jpeg", 1600, 1200)
    with pytest.raises(RecordError) as caught:
        inspect_image(data[: len(data) * 2 // 3], MAX_PIXELS)  # truncated: still decoded to the end
    assert caught.value.reason == "undecodable_image"

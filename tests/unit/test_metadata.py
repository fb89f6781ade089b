"""Location removal: the stored bytes (strip_location's output) carry no location, and still
decode to the same picture; JPEG, PNG and WebP are edited in place, not re-encoded."""

import io
import struct

import numpy as np
import pytest
from PIL import Image

from core.errors import RecordError
from core.imaging import inspect_image, preprocess
from core.metadata import strip_location
from tests import images

MAX_PIXELS = 40_000_000


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def assert_no_location(data: bytes) -> None:
    assert [marker for marker in images.LOCATION_MARKERS + images.HEIC_MARKERS if marker in data] == []
    assert b"http://ns.adobe.com/xap/1.0/" not in data and b"Photoshop 3.0" not in data
    exif = decoded(data).getexif()
    assert images.GPS_IFD not in exif
    assert images.MAKER_NOTE not in exif.get_ifd(images.EXIF_IFD)


def assert_kept_exif(data: bytes, orientation: int = 1) -> None:
    exif = decoded(data).getexif()
    assert exif[0x010F] == "FruitsTestCam"
    assert exif.get(0x0112, 1) == orientation
    assert exif.get_ifd(images.EXIF_IFD)[images.DATE_TIME_ORIGINAL] == "2026:03:04 05:06:07"


def scan_data(jpeg: bytes) -> bytes:
    """The compressed pixels of a baseline JPEG: from its start of scan to its first EOI."""
    start = jpeg.index(b"\xff\xda")
    return jpeg[start : jpeg.index(b"\xff\xd9", start) + 2]


def test_jpeg_loses_every_location_field_without_a_reencode():
    original = images.located_jpeg(orientation=6)
    stored = strip_location(original, "image/jpeg")
    assert stored.content_type == "image/jpeg"
    assert_no_location(stored.data)
    assert b"\xff\xfe" not in stored.data[: stored.data.index(b"\xff\xda")]  # no comment segment either
    assert_kept_exif(stored.data, orientation=6)
    assert scan_data(stored.data) == scan_data(original) and stored.data.endswith(scan_data(original))
    assert np.array_equal(np.asarray(decoded(stored.data)), np.asarray(decoded(original)))


def test_clean_images_are_returned_untouched():
    for data, content_type in [(images.jpeg(), "image/jpeg"), (images.png(), "image/png")]:
        assert strip_location(data, content_type).data is data


def test_jpeg_with_unreadable_exif_loses_it():
    data = images.jpeg()
    broken = data[:2] + b"\xff\xe1" + struct.pack(">H", 18) + b"Exif\x00\x00garbage-GPS." + data[2:]
    stored = strip_location(broken, "image/jpeg").data
    assert b"garbage-GPS" not in stored
    assert decoded(stored).size == (100, 100)


def test_png_loses_exif_gps_and_text_chunks_pixels_untouched():
    original = images.located_png(orientation=3)
    stored = strip_location(original, "image/png")
    assert stored.content_type == "image/png"
    assert_no_location(stored.data)
    assert not {b"tEXt", b"zTXt", b"iTXt"} & {kind for kind in _png_chunk_types(stored.data)}
    assert b"eXIf" in _png_chunk_types(stored.data)
    assert_kept_exif(stored.data, orientation=3)
    assert np.array_equal(np.asarray(decoded(stored.data)), np.asarray(decoded(original)))


def _png_chunk_types(data: bytes) -> list[bytes]:
    kinds, pos = [], 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        kinds.append(kind)
        pos += 12 + length
    return kinds


def test_webp_loses_xmp_and_exif_gps_pixels_untouched():
    original = images.located_webp(orientation=8)
    stored = strip_location(original, "image/webp")
    assert stored.content_type == "image/webp"
    assert_no_location(stored.data)
    assert b"XMP " not in stored.data and b"EXIF" in stored.data
    assert stored.data[20] & 0x04 == 0 and stored.data[20] & 0x08  # VP8X flags: no XMP, EXIF present
    assert struct.unpack("<I", stored.data[4:8])[0] == len(stored.data) - 8
    assert_kept_exif(stored.data, orientation=8)
    assert np.array_equal(np.asarray(decoded(stored.data)), np.asarray(decoded(original)))


def test_mpo_is_stored_as_its_first_frame_without_a_reencode():
    original = images.located_mpo()
    assert decoded(original).format == "MPO" and decoded(original).n_frames == 2
    stored = strip_location(original, "image/jpeg")
    image = decoded(stored.data)
    assert (stored.content_type, image.format, getattr(image, "n_frames", 1)) == ("image/jpeg", "JPEG", 1)
    assert b"MPF\x00" not in stored.data and stored.data.count(b"\xff\xd8") == 1
    assert_no_location(stored.data)
    assert np.array_equal(np.asarray(image), np.asarray(decoded(original)))  # the first frame, bit for bit
    assert scan_data(stored.data) == scan_data(original)


def _second_mp_entry_offset(mpo: bytes) -> tuple[int, str]:
    """Where the MP index stores the second image's DataOffset, and the index's byte order."""
    tiff = mpo.index(b"MPF\x00") + 4
    endian = ">" if mpo[tiff : tiff + 2] == b"MM" else "<"
    ifd = tiff + struct.unpack(endian + "I", mpo[tiff + 4 : tiff + 8])[0]
    (count,) = struct.unpack(endian + "H", mpo[ifd : ifd + 2])
    for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
        tag, _, _, value = struct.unpack(endian + "HHII", mpo[entry : entry + 12])
        if tag == 0xB002:  # MPEntry: 16 bytes per image, DataOffset at +8
            return tiff + value + 16 + 8, endian
    raise AssertionError("no MP entry list")


def test_mpo_whose_index_does_not_add_up_is_reencoded():
    original = bytearray(images.located_mpo())
    # Point the second image into the first frame: cutting at the first EOI is no longer safe.
    at, endian = _second_mp_entry_offset(original)
    original[at : at + 4] = struct.pack(endian + "I", 100)
    stored = strip_location(bytes(original), "image/jpeg")
    image = decoded(stored.data)
    assert (image.format, getattr(image, "n_frames", 1), image.size) == ("JPEG", 1, (64, 48))
    assert_no_location(stored.data)
    assert scan_data(stored.data) != scan_data(bytes(original))  # a new encode
    first = np.asarray(decoded(bytes(original)), dtype=int)
    assert np.abs(np.asarray(image, dtype=int) - first).mean() < 8  # quality 95


def test_heic_is_stored_as_a_jpeg_without_location():
    original = images.located_heic()
    assert all(marker in original for marker in images.HEIC_MARKERS)
    stored = strip_location(original, "image/heic")
    assert stored.content_type == "image/jpeg"
    image = decoded(stored.data)
    assert (image.format, image.size) == ("JPEG", (64, 64))
    assert_no_location(stored.data)
    assert image.getexif()[0x010F] == "FruitsTestCam"
    assert _near(image.getpixel((10, 30)), (200, 30, 30)) and _near(image.getpixel((54, 30)), (30, 30, 200))


def test_avif_is_stored_as_a_jpeg_without_location_keeping_its_orientation():
    original = images.located_avif(orientation=6)
    stored = strip_location(original, "image/avif")
    assert stored.content_type == "image/jpeg"
    image = decoded(stored.data)
    assert (image.format, image.size) == ("JPEG", (64, 32))
    assert_no_location(stored.data)
    assert_kept_exif(stored.data, orientation=6)
    # The model sees the same upright picture in the AVIF and in the stored JPEG.
    assert np.abs(preprocess(original, 64).astype(int) - preprocess(stored.data, 64).astype(int)).mean() < 4


def _near(pixel, expected, tolerance=12):
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, expected))


@pytest.mark.parametrize(
    "make",
    [images.located_jpeg, images.located_png, images.located_webp, images.located_mpo, images.located_heic,
     images.located_avif],
)
def test_stripping_twice_changes_nothing_more(make):
    original = make()
    once = strip_location(original, inspect_image(original, MAX_PIXELS).content_type)
    twice = strip_location(once.data, inspect_image(once.data, MAX_PIXELS).content_type)
    assert twice.data == once.data and twice.content_type == once.content_type


def test_a_jpeg_segment_running_past_the_end_is_corrupt_metadata():
    data = images.jpeg()
    broken = data[:2] + b"\xff\xe1\xff\xf0Exif\x00\x00"
    with pytest.raises(RecordError) as caught:
        strip_location(broken, "image/jpeg")
    assert caught.value.reason == "corrupt_metadata"


def test_data_after_the_image_goes_even_when_nothing_else_does():
    clean = images.jpeg()
    motion_photo = clean + b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42TRAILERMARKER"
    assert strip_location(motion_photo, "image/jpeg").data == clean
    png = images.png()
    assert strip_location(png + b"TRAILERMARKER", "image/png").data == png

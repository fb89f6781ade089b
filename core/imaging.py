"""Image checks and preprocessing, shared by ingest, preprocess and the trainer so
that training and serving see exactly the same pixels."""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from core.errors import Reason, RecordError

MODEL_INPUT_SIZE = 192
"""Side of the square RGB image the featurizer takes: photos are padded (white) to a square
and resized to it (192 px: what cross-validation on real photos chose within the throughput
budget; core/models/MODEL_CARD.md)."""
PAD_COLOUR = (255, 255, 255)
"""Padding and alpha background: white, like the Fruits-360 photos."""

_SIGNATURES = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
)
_KNOWN_NON_IMAGES = (
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"GIF8", "a GIF image (not supported)"),
    (b"\x00\x00\x00", "an ISO media file (HEIC/MP4 are not supported)"),
)
_EXIF_GPS_IFD = 0x8825
_PIL_FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP"}


@dataclass(frozen=True)
class ImageInfo:
    content_type: str
    width: int
    height: int


def sniff_content_type(data: bytes) -> str:
    """The image type from its magic bytes; the client's claim is not trusted."""
    if not data:
        raise RecordError(Reason.EMPTY_IMAGE, "the image is empty (0 bytes)")
    for signature, content_type in _SIGNATURES:
        if data.startswith(signature):
            return content_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    for signature, what in _KNOWN_NON_IMAGES:
        if data.startswith(signature):
            raise RecordError(Reason.UNSUPPORTED_TYPE, f"the payload is {what}, not a JPEG, PNG or WebP photo")
    raise RecordError(
        Reason.UNSUPPORTED_TYPE, f"unrecognised payload starting with {data[:8].hex()}: not a JPEG, PNG or WebP photo"
    )


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Open lazily (header only) and refuse oversized images before decoding any pixels."""
    try:
        with warnings.catch_warnings():
            # Our own limit below is the one that counts; Pillow's is only a warning up to 2×.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise RecordError(Reason.IMAGE_TOO_LARGE, f"decompression bomb guard: {exc}") from exc
    except Exception as exc:  # Pillow raises many types for garbage input
        raise RecordError(Reason.UNDECODABLE_IMAGE, f"cannot read the image header: {exc}") from exc
    width, height = image.size
    if width * height > max_pixels:
        raise RecordError(
            Reason.IMAGE_TOO_LARGE, f"{width}×{height} = {width * height:,} pixels exceeds the limit of {max_pixels:,}"
        )
    return image


def inspect_image(data: bytes, max_pixels: int) -> ImageInfo:
    """Check that ``data`` is a whole, decodable, reasonably sized photo."""
    content_type = sniff_content_type(data)
    image = _open(data, max_pixels)
    if _PIL_FORMATS[content_type] != image.format:
        raise RecordError(Reason.UNSUPPORTED_TYPE, f"bytes look like {content_type} but decode as {image.format}")
    try:
        image.load()  # a full decode: catches truncated and corrupt pixel data
    except Exception as exc:
        raise RecordError(Reason.UNDECODABLE_IMAGE, f"corrupt or truncated {content_type}: {exc}") from exc
    return ImageInfo(content_type, image.width, image.height)


def strip_gps(data: bytes, content_type: str) -> bytes:
    """The image without its EXIF GPS block; JPEGs are edited in place (no re-encode)."""
    image = Image.open(io.BytesIO(data))
    exif = image.getexif()
    if _EXIF_GPS_IFD not in exif:
        return data
    del exif[_EXIF_GPS_IFD]
    if content_type == "image/jpeg":
        return _replace_jpeg_exif(data, b"Exif\x00\x00" + exif.tobytes())
    out = io.BytesIO()
    image.save(out, format=_PIL_FORMATS[content_type], exif=exif, lossless=True)
    return out.getvalue()


def _replace_jpeg_exif(data: bytes, app1_payload: bytes) -> bytes:
    """Swap the payload of the JPEG's Exif APP1 segment, leaving the scan data untouched."""
    pos = 2  # after SOI
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker == 0xE1 and data[pos + 4 : pos + 10] == b"Exif\x00\x00":
            segment = b"\xff\xe1" + struct.pack(">H", len(app1_payload) + 2) + app1_payload
            return data[:pos] + segment + data[pos + 2 + length :]
        if marker == 0xDA:  # start of scan: no more metadata segments
            break
        pos += 2 + length
    raise RecordError(Reason.CORRUPT_METADATA, "EXIF with GPS found but its JPEG segment could not be located")


def preprocess(data: bytes, size: int = MODEL_INPUT_SIZE) -> np.ndarray:
    """Decode, apply EXIF orientation, convert to RGB on white, fit inside
    ``size``×``size`` keeping the aspect ratio, and pad: uint8 array (size, size, 3)."""
    try:
        image = Image.open(io.BytesIO(data))
        if image.format == "JPEG":
            image.draft("RGB", (size, size))  # decode at a reduced scale: much faster for big photos
        image = ImageOps.exif_transpose(image)
        if image.mode in ("RGBA", "LA", "P", "PA"):
            image = image.convert("RGBA")
            background = Image.new("RGBA", image.size, PAD_COLOUR + (255,))
            image = Image.alpha_composite(background, image)
        image = image.convert("RGB")
        if image.size != (size, size):
            image = ImageOps.pad(image, (size, size), method=Image.Resampling.BILINEAR, color=PAD_COLOUR)
        return np.asarray(image, dtype=np.uint8)
    except RecordError:
        raise
    except Exception as exc:
        raise RecordError(Reason.UNDECODABLE_IMAGE, f"cannot preprocess the image: {exc}") from exc

"""Image checks and preprocessing, shared by ingest, preprocess and the trainer so
that training and serving see exactly the same pixels.

Accepted photos: JPEG (and MPO, the multi-picture JPEG of phone cameras), PNG, WebP,
HEIC/HEIF (decoded by the ``pi-heif`` plugin: libheif with the libde265 HEVC decoder, no
encoder) and AVIF (Pillow's own libavif/dav1d decoder). Removing location metadata before a
photo is stored is ``core.metadata.strip_location``."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import pi_heif
from PIL import Image, ImageOps

from core.errors import Reason, RecordError

# HEIF for Image.open, primary image only: no thumbnails, depth maps or auxiliary images.
pi_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)

MODEL_INPUT_SIZE = 192
"""Side of the square RGB image the featurizer takes: photos are padded (white) to a square
and resized to it (192 px: what cross-validation on real photos chose within the throughput
budget; core/models/MODEL_CARD.md)."""
PAD_COLOUR = (255, 255, 255)
"""Padding and alpha background: white, like the Fruits-360 photos."""

PIL_FORMATS: dict[str, tuple[str, ...]] = {
    "image/jpeg": ("JPEG",),  # Pillow's JPEG opener also gives MPO (format "MPO") for multi-picture files
    "image/png": ("PNG",),
    "image/webp": ("WEBP",),
    "image/heic": ("HEIF",),
    "image/heif": ("HEIF", "AVIF"),  # only the generic brands (mif1, msf1): either codec
    "image/avif": ("AVIF",),
}
"""The accepted content types and the only Pillow openers tried for each."""
SUPPORTED = "a JPEG, PNG, WebP, HEIC/HEIF or AVIF photo"

_SIGNATURES = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
)
_KNOWN_NON_IMAGES = (
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"GIF8", "a GIF image (not supported)"),
)
# ISO base media file brands (the ftyp box): AVIF, then HEVC-coded HEIF, then generic HEIF.
_AVIF_BRANDS = {b"avif", b"avis"}
_HEIC_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"}
_HEIF_BRANDS = {b"mif1", b"msf1", b"mif2"}
_FTYP_MAX_BYTES = 4096


@dataclass(frozen=True)
class ImageInfo:
    content_type: str
    width: int
    height: int


def sniff_content_type(data: bytes) -> str:
    """The image type from its magic bytes (for HEIF/AVIF: the ``ftyp`` box's brands); the
    client's claim is not trusted. Error messages never quote the payload, only its size."""
    if not data:
        raise RecordError(Reason.EMPTY_IMAGE, "the image is empty (0 bytes)")
    for signature, content_type in _SIGNATURES:
        if data.startswith(signature):
            return content_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[4:8] == b"ftyp":
        return _iso_media_type(data)
    for signature, what in _KNOWN_NON_IMAGES:
        if data.startswith(signature):
            raise RecordError(Reason.UNSUPPORTED_TYPE, f"the payload is {what}, not {SUPPORTED}")
    raise RecordError(Reason.UNSUPPORTED_TYPE, f"unrecognised payload of {len(data):,} bytes: not {SUPPORTED}")


def _iso_media_type(data: bytes) -> str:
    """image/avif, image/heic or image/heif from the major and compatible brands of the ftyp box."""
    box_size = int.from_bytes(data[:4], "big")
    end = min(box_size, len(data), _FTYP_MAX_BYTES) if box_size >= 16 else 16
    brands = {data[8:12]} | {data[i : i + 4] for i in range(16, end - 3, 4)}
    if brands & _AVIF_BRANDS:
        return "image/avif"
    if brands & _HEIC_BRANDS:
        return "image/heic"
    if brands & _HEIF_BRANDS:
        return "image/heif"
    raise RecordError(Reason.UNSUPPORTED_TYPE, "the payload is an ISO media file (a video?), not a HEIF or AVIF image")


def open_image(data: bytes, content_type: str, max_pixels: int | None = None) -> Image.Image:
    """Open lazily (header only) with the opener of ``content_type`` only, and refuse an image
    over ``max_pixels`` (None: only Pillow's decompression-bomb guard) before decoding any pixels."""
    try:
        with warnings.catch_warnings():
            # Our own limit below is the one that counts; Pillow's is only a warning up to 2×.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=PIL_FORMATS[content_type])
    except Image.DecompressionBombError as exc:
        raise RecordError(Reason.IMAGE_TOO_LARGE, f"decompression bomb guard: {exc}") from exc
    except Exception as exc:  # Pillow raises many types for garbage input; their messages may quote it
        raise RecordError(
            Reason.UNDECODABLE_IMAGE, f"cannot read the {content_type} header ({type(exc).__name__})"
        ) from exc
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        raise RecordError(
            Reason.IMAGE_TOO_LARGE, f"{width}×{height} = {width * height:,} pixels exceeds the limit of {max_pixels:,}"
        )
    return image


def decode(image: Image.Image, content_type: str) -> None:
    """Decode the pixels of ``image`` (its first frame, or the primary image): a truncated or
    corrupt image raises UNDECODABLE_IMAGE."""
    try:
        image.load()
    except Exception as exc:
        raise RecordError(
            Reason.UNDECODABLE_IMAGE, f"corrupt or truncated {content_type} ({type(exc).__name__})"
        ) from exc


def inspect_image(data: bytes, max_pixels: int) -> ImageInfo:
    """Check that ``data`` is a whole, decodable, reasonably sized photo."""
    content_type = sniff_content_type(data)
    image = open_image(data, content_type, max_pixels)
    info = ImageInfo(content_type, image.width, image.height)
    if image.format in ("JPEG", "MPO"):
        # Every byte of the stream is still decoded (a truncated or corrupt one raises), at 1/8
        # scale: a third of the CPU of a full-size decode for a 12-megapixel photo (62 → 21 ms).
        image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
    decode(image, content_type)  # catches truncated and corrupt pixel data
    return info


def flatten_on_white(image: Image.Image) -> Image.Image:
    """RGB, transparent parts on the white background."""
    if image.mode in ("RGBA", "LA", "P", "PA"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, PAD_COLOUR + (255,))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


def preprocess(data: bytes, size: int = MODEL_INPUT_SIZE) -> np.ndarray:
    """Decode, apply EXIF orientation, convert to RGB on white, fit inside
    ``size``×``size`` keeping the aspect ratio, and pad: uint8 array (size, size, 3)."""
    try:
        try:  # the sniffed type's opener only: the HEIF plugin would also claim AVIF files of brand mif1
            formats: tuple[str, ...] | None = PIL_FORMATS[sniff_content_type(data)]
        except RecordError:
            formats = None  # not a photo type ingest accepts (the trainer's files): whatever Pillow reads
        image = Image.open(io.BytesIO(data), formats=formats)
        if image.format in ("JPEG", "MPO"):
            image.draft("RGB", (size, size))  # decode at a reduced scale: much faster for big photos
        image = flatten_on_white(ImageOps.exif_transpose(image))
        if image.size != (size, size):
            image = ImageOps.pad(image, (size, size), method=Image.Resampling.BILINEAR, color=PAD_COLOUR)
        return np.asarray(image, dtype=np.uint8)
    except RecordError:
        raise
    except Exception as exc:
        raise RecordError(Reason.UNDECODABLE_IMAGE, f"cannot preprocess the image ({type(exc).__name__})") from exc

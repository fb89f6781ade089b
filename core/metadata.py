"""Removing where a photo was taken before it is stored (ingest) or sent (``fruits produce``).

``strip_location`` keeps only the metadata a decoder needs and drops every container of
location fields, whatever it holds:

- **EXIF** (JPEG APP1, PNG ``eXIf``, WebP ``EXIF``) is kept for its orientation, camera and
  time tags, without the GPS IFD, the XMP (700), IPTC (33723) and Photoshop (34377) tags of
  IFD0, and the MakerNote (vendor blobs may hold positions or place names). EXIF that cannot
  be parsed is dropped whole.
- **XMP** packets (exif:GPS*, photoshop:City/State/Country, Iptc4xmpCore:Location, …) are
  dropped whole, Extended XMP included; so are IPTC (JPEG APP13, Photoshop IRB), JUMBF/C2PA
  manifests (APP11: they embed EXIF and XMP assertions), comments, PNG text chunks
  (``tEXt``/``zTXt``/``iTXt``), ``tIME`` and unknown chunks or segments: an allow-list, not
  a block-list.
- **JPEG, PNG and WebP are edited in place, never re-encoded**: segments or chunks are
  dropped, EXIF rewritten, the compressed pixels copied byte for byte. Anything after the
  end of the image (a JPEG's EOI, PNG's IEND, the RIFF size) goes too: for MPO, the other
  frames and their metadata; for "motion photos", the appended video with its own GPS.
- **MPO** (phone cameras' multi-picture JPEG): the first frame is cut at its EOI, which must
  end before the next image's offset in the MP index; else the first frame is re-encoded.
  The result is a plain, single-frame JPEG.
- **HEIC/HEIF and AVIF are re-encoded** to a JPEG at quality ``REENCODE_QUALITY``: their
  metadata are items of the ``meta`` box (``iinf``/``iloc``/``iref``) that cannot be removed
  without rewriting the box offsets, and the service has no HEVC encoder. The primary image
  only, as the decoder shows it; EXIF is carried over without location as above (for HEIF,
  libheif has applied the container's rotation and the EXIF orientation is 1; for AVIF,
  Pillow reports the rotation as the EXIF orientation, which the JPEG keeps), so is the ICC
  profile; transparency is flattened on white like ``core.imaging.preprocess`` does.

Errors are RecordErrors whose messages never quote the photo's bytes.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

from PIL import Image

from core.errors import Reason, RecordError
from core.imaging import decode, flatten_on_white, open_image

REENCODE_QUALITY = 95
"""JPEG quality of re-encoded photos (HEIC/HEIF, AVIF, an MPO whose index does not add up)."""
REENCODED_TYPES = frozenset({"image/heic", "image/heif", "image/avif"})
"""Content types stored as a re-encoded JPEG (see the module's docstring)."""

_EXIF_PREFIX = b"Exif\x00\x00"
_GPS_IFD, _EXIF_IFD, _MAKER_NOTE = 0x8825, 0x8769, 0x927C
_XMP_TAG, _IPTC_TAG, _PHOTOSHOP_TAG = 0x02BC, 0x83BB, 0x8649
_IFD0_LOCATION_TAGS = (_GPS_IFD, _XMP_TAG, _IPTC_TAG, _PHOTOSHOP_TAG)

_SOI, _EOI, _SOS = b"\xff\xd8", b"\xff\xd9", 0xDA
_JPEG_KEPT_APPS = {
    0xE0: (b"JFIF\x00", b"JFXX\x00"),
    0xE1: (_EXIF_PREFIX,),
    0xE2: (b"ICC_PROFILE\x00",),
    0xEE: (b"Adobe",),
}
"""The application segments kept (by marker, then payload prefix): JFIF, EXIF (edited), the ICC
profile and Adobe's colour transform (needed to decode CMYK/YCCK). Every other APPn and COM goes."""
_MPF = b"MPF\x00"

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_KEPT_CHUNKS = frozenset(
    b"IHDR PLTE IDAT IEND tRNS gAMA cHRM sRGB iCCP sBIT bKGD pHYs hIST sPLT cICP mDCV cLLI mDCv cLLi acTL fcTL fdAT".split()
)
"""Image data, colour and animation chunks; eXIf is kept edited. Text, tIME and unknown chunks go."""
_PNG_IEND = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))

_WEBP_KEPT_CHUNKS = frozenset({b"VP8X", b"VP8 ", b"VP8L", b"ALPH", b"ANIM", b"ANMF", b"ICCP"})
_WEBP_XMP_FLAG, _WEBP_EXIF_FLAG = 0x04, 0x08


@dataclass(frozen=True)
class StrippedImage:
    """A photo without location metadata, as it is stored."""

    data: bytes
    content_type: str


def strip_location(data: bytes, content_type: str) -> StrippedImage:
    """``data`` (of the sniffed ``content_type``) without any location metadata: JPEG, PNG and
    WebP edited in place (the same bytes if there is nothing to remove), MPO as its first frame,
    HEIC/HEIF/AVIF re-encoded as JPEG. The content type of the result may differ from the input's."""
    if content_type == "image/jpeg":
        return StrippedImage(_strip_jpeg(data), "image/jpeg")
    if content_type == "image/png":
        return StrippedImage(_strip_png(data), "image/png")
    if content_type == "image/webp":
        return StrippedImage(_strip_webp(data), "image/webp")
    if content_type in REENCODED_TYPES:
        return StrippedImage(_reencode_as_jpeg(data, content_type), "image/jpeg")
    raise ValueError(f"no location stripping for {content_type}")


def _corrupt(what: str) -> RecordError:
    return RecordError(Reason.CORRUPT_METADATA, f"cannot remove location metadata: {what}")


# EXIF ------------------------------------------------------------------------------------


def _exif_without_location(raw: bytes) -> bytes | None:
    """``raw`` EXIF (with or without the ``Exif\\0\\0`` prefix, kept as found) rewritten without
    location; None if it holds none (keep it as it is); b"" if it cannot be parsed (drop it)."""
    exif = Image.Exif()
    try:
        exif.load(raw)
        found = [tag for tag in _IFD0_LOCATION_TAGS if tag in exif]
        # get_ifd caches the sub-IFD: never call it for GPS, or tobytes() would write it back.
        exif_ifd = exif.get_ifd(_EXIF_IFD) if _EXIF_IFD in exif else {}
    except Exception:  # noqa: BLE001 (malformed EXIF raises many types: dropping it is the safe answer)
        return b""
    if not found and _MAKER_NOTE not in exif_ifd:
        return None
    for tag in found:
        del exif[tag]
    exif_ifd.pop(_MAKER_NOTE, None)
    try:
        cleaned = exif.tobytes()
    except Exception:  # noqa: BLE001 (as above)
        return b""
    check = Image.Exif()
    check.load(cleaned)
    if any(tag in check for tag in _IFD0_LOCATION_TAGS) or _MAKER_NOTE in check.get_ifd(_EXIF_IFD):
        raise _corrupt("the EXIF block still holds location tags after rewriting it")
    return cleaned if raw.startswith(_EXIF_PREFIX) else cleaned.removeprefix(_EXIF_PREFIX)


# JPEG ------------------------------------------------------------------------------------


def _strip_jpeg(data: bytes) -> bytes:
    """Walk the JPEG's markers up to its first EOI, keeping the compressed scans as they are."""
    if not data.startswith(_SOI):
        raise _corrupt("the JPEG does not start with SOI")
    parts = [_SOI]
    changed = False
    mp_header = None  # offset of the MP index's TIFF header: offsets in the index count from it
    pos, size = 2, len(data)
    while True:
        start = pos
        while pos < size and data[pos] != 0xFF:  # extraneous bytes: decoders skip them, so do we
            pos += 1
        while pos + 1 < size and data[pos + 1] == 0xFF:  # fill bytes before a marker
            pos += 1
        changed |= pos != start
        if pos + 1 >= size:  # truncated, no EOI: decoders stop here too
            parts.append(_EOI)
            changed, end = True, size
            break
        marker = data[pos + 1]
        if marker == 0xD9:
            parts.append(_EOI)
            end = pos + 2
            break
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # standalone markers
            parts.append(data[pos : pos + 2])
            pos += 2
            continue
        if pos + 4 > size:
            raise _corrupt("the JPEG ends inside a segment header")
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        segment_end = pos + 2 + length
        if length < 2 or segment_end > size:
            raise _corrupt("a JPEG segment runs past the end of the file")
        payload = data[pos + 4 : segment_end]
        if 0xE0 <= marker <= 0xEF or marker == 0xFE:
            if marker == 0xE2 and payload.startswith(_MPF):
                mp_header = pos + 4 + len(_MPF)
            if not payload.startswith(_JPEG_KEPT_APPS.get(marker, ())):
                changed = True
            elif marker == 0xE1 and (cleaned := _exif_without_location(payload)) is not None:
                changed = True
                if cleaned:
                    if len(cleaned) + 2 > 0xFFFF:
                        raise _corrupt("the EXIF block without location does not fit a JPEG segment")
                    parts.append(b"\xff\xe1" + struct.pack(">H", len(cleaned) + 2) + cleaned)
            else:
                parts.append(data[pos:segment_end])
            pos = segment_end
            continue
        parts.append(data[pos:segment_end])
        pos = segment_end
        if marker == _SOS:  # entropy-coded data runs to the next marker that is not 00 or RSTn
            scan = pos
            while (ff := data.find(b"\xff", scan, size - 1)) >= 0 and (
                data[ff + 1] == 0x00 or 0xD0 <= data[ff + 1] <= 0xD7
            ):
                scan = ff + 2
            stop = size if ff < 0 else ff
            parts.append(data[pos:stop])
            pos = stop
    changed |= end != size  # trailing data: other MPO frames, a motion photo's video, junk
    if mp_header is not None and not _first_frame_ends_before_the_next(data, mp_header, end):
        return _reencode_as_jpeg(data, "image/jpeg")
    return b"".join(parts) if changed else data


def _first_frame_ends_before_the_next(data: bytes, mp_header: int, end: int) -> bool:
    """Whether the MP index agrees that the first frame ends at ``end``: every other image starts
    with SOI at or after it."""
    try:
        image = Image.open(io.BytesIO(data), formats=["JPEG"])
        entries = image.mpinfo[0xB002] if image.format == "MPO" else []
    except Exception:  # noqa: BLE001 (an MP index Pillow cannot read does not add up either)
        return False
    offsets = [mp_header + entry["DataOffset"] for entry in entries[1:]]
    return all(offset >= end and data[offset : offset + 2] == _SOI for offset in offsets)


# PNG -------------------------------------------------------------------------------------


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _strip_png(data: bytes) -> bytes:
    if not data.startswith(_PNG_SIGNATURE):
        raise _corrupt("the PNG does not start with its signature")
    parts = [_PNG_SIGNATURE]
    changed = False
    pos, size = len(_PNG_SIGNATURE), len(data)
    while pos + 12 <= size:
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        end = pos + 12 + length
        if end > size:
            raise _corrupt("a PNG chunk runs past the end of the file")
        if kind == b"eXIf" and (cleaned := _exif_without_location(data[pos + 8 : end - 4])) is not None:
            changed = True
            if cleaned:
                parts.append(_png_chunk(b"eXIf", cleaned))
        elif kind in _PNG_KEPT_CHUNKS or kind == b"eXIf":
            parts.append(data[pos:end])
        else:
            changed = True
        pos = end
        if kind == b"IEND":
            break
    else:  # no IEND: end the image properly
        parts.append(_PNG_IEND)
        changed = True
    changed |= pos != size
    return b"".join(parts) if changed else data


# WebP ------------------------------------------------------------------------------------


def _strip_webp(data: bytes) -> bytes:
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise _corrupt("the WebP does not start with a RIFF WEBP header")
    riff_end = 8 + struct.unpack("<I", data[4:8])[0]
    if riff_end > len(data):
        raise _corrupt("the WebP is shorter than its RIFF header says")
    chunks: list[tuple[bytes, bytes]] = []
    changed = riff_end != len(data)
    pos = 12
    while pos + 8 <= riff_end:
        kind, length = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        if pos + 8 + length > riff_end:
            raise _corrupt("a WebP chunk runs past the end of the file")
        payload = data[pos + 8 : pos + 8 + length]
        if kind == b"EXIF" and (cleaned := _exif_without_location(payload)) is not None:
            changed = True
            if cleaned:
                chunks.append((kind, cleaned))
        elif kind in _WEBP_KEPT_CHUNKS or kind == b"EXIF":
            chunks.append((kind, payload))
        else:
            changed = True
        pos += 8 + length + (length & 1)
    if not changed:
        return data
    has_exif = any(kind == b"EXIF" for kind, _ in chunks)
    body = b"WEBP"
    for kind, payload in chunks:
        if kind == b"VP8X":  # the extended header's flags must match the chunks that remain
            flags = payload[0] & ~_WEBP_XMP_FLAG & ~_WEBP_EXIF_FLAG | (_WEBP_EXIF_FLAG if has_exif else 0)
            payload = bytes([flags]) + payload[1:]
        body += kind + struct.pack("<I", len(payload)) + payload + b"\x00" * (len(payload) & 1)
    return b"RIFF" + struct.pack("<I", len(body)) + body


# Re-encoding -----------------------------------------------------------------------------


def _reencode_as_jpeg(data: bytes, content_type: str) -> bytes:
    """The primary image (first frame) as a JPEG at REENCODE_QUALITY, with its ICC profile and
    its EXIF without location; nothing else of the original's metadata."""
    image = open_image(data, content_type)
    decode(image, content_type)
    exif = image.info.get("exif") or b""
    if exif and (cleaned := _exif_without_location(exif)) is not None:
        exif = cleaned
    if exif and not exif.startswith(_EXIF_PREFIX):
        exif = _EXIF_PREFIX + exif
    pixels = flatten_on_white(image)
    pixels.info = {}  # nothing carried over implicitly (Pillow's JPEG writer reuses a comment)
    out = io.BytesIO()
    try:
        pixels.save(out, format="JPEG", quality=REENCODE_QUALITY, exif=exif, icc_profile=image.info.get("icc_profile"))
    except ValueError as exc:  # an EXIF block or ICC profile that cannot fit a JPEG
        raise _corrupt(f"cannot write the JPEG ({type(exc).__name__})") from exc
    return out.getvalue()

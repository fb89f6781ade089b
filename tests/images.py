"""Test images made in memory (the dataset is only read, never copied)."""

from __future__ import annotations

import base64
import io
import struct

from PIL import Image

GPS_IFD = 0x8825


def jpeg(width: int = 100, height: int = 100, colour=(200, 30, 30), gps: bool = False, orientation: int = 1) -> bytes:
    image = Image.new("RGB", (width, height), colour)
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "FruitsTestCam"  # Make: survives GPS stripping
    if gps:
        exif[GPS_IFD] = {1: "N", 2: (48.0, 51.0, 24.0), 3: "E", 4: (2.0, 21.0, 3.0)}
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90, exif=exif)
    return out.getvalue()


def png(width: int = 100, height: int = 100, mode: str = "RGBA") -> bytes:
    image = Image.new(mode, (width, height), 0)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def huge_png(side: int = 20000) -> bytes:
    """A 20000×20000 bilevel PNG: tiny on the wire (~50 kB), 400 Mpx once decoded."""
    out = io.BytesIO()
    Image.new("1", (side, side), 0).save(out, format="PNG", optimize=True)
    return out.getvalue()


def corrupt_jpeg() -> bytes:
    """A JPEG header followed by garbage."""
    data = bytearray(jpeg())
    for i in range(len(data) // 2, len(data) - 2):
        data[i] = (data[i] * 7 + 13) % 256
    return bytes(data[:20]) + b"\x00garbage" * 50


def truncated_jpeg() -> bytes:
    data = jpeg(colour=(10, 200, 40))
    return data[: len(data) // 2]


PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


# Location metadata: every marker below must be gone from a stored original.
GPS_MARKER = "GPSMARKER-48.857N"  # GPSMapDatum, inside the GPS IFD
XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:exif="http://ns.adobe.com/exif/1.0/" xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/"'
    b' xmlns:Iptc4xmpCore="http://iptc.org/std/Iptc4xmpCore/1.0/xmlns/"'
    b' exif:GPSLatitude="48,51.4N" photoshop:City="XMPCITYMARKER" Iptc4xmpCore:Location="XMPLOCATIONMARKER"/>'
    b"</rdf:RDF></x:xmpmeta>"
)
LOCATION_MARKERS = (
    GPS_MARKER.encode(), b"GPSLatitude", b"XMPCITYMARKER", b"XMPLOCATIONMARKER", b"photoshop:City",
    b"IPTCCITYMARKER", b"EXTXMPMARKER", b"MAKERNOTEMARKER", b"C2PAMARKER", b"TRAILERMARKER", b"PNGTEXTMARKER",
)
"""Strings of the location fields the located_* images carry (none may survive stripping)."""
EXIF_IFD, MAKER_NOTE, DATE_TIME_ORIGINAL = 0x8769, 0x927C, 0x9003


def located_exif(orientation: int = 1) -> Image.Exif:
    """EXIF with a GPS IFD and a MakerNote, beside tags that must survive (Make, orientation, date)."""
    exif = Image.Exif()
    exif[0x010F] = "FruitsTestCam"
    exif[0x0112] = orientation
    exif[GPS_IFD] = {1: "N", 2: (48.0, 51.0, 24.0), 3: "E", 4: (2.0, 21.0, 3.0), 18: GPS_MARKER}
    exif[EXIF_IFD] = {DATE_TIME_ORIGINAL: "2026:03:04 05:06:07", MAKER_NOTE: b"MAKERNOTEMARKER"}
    return exif


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    """Random pixels: a re-encode cannot reproduce them exactly."""
    import numpy as np

    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8))


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def located_jpeg(width: int = 64, height: int = 48, orientation: int = 1) -> bytes:
    """A phone-like JPEG: EXIF with GPS, XMP, Extended XMP, IPTC (APP13), a C2PA manifest (APP11),
    a comment, and a motion photo's video appended after the image."""
    out = io.BytesIO()
    noise(width, height).save(out, format="JPEG", quality=90, exif=located_exif(orientation), xmp=XMP)
    iptc_city = b"\x1c\x02\x5a" + struct.pack(">H", 14) + b"IPTCCITYMARKER"  # IIM 2:90 City
    irb = b"8BIM\x04\x04\x00\x00" + struct.pack(">I", len(iptc_city)) + iptc_city + b"\x00" * (len(iptc_city) & 1)
    extended_xmp = b"http://ns.adobe.com/xmp/extension/\x00" + b"0" * 32 + struct.pack(">II", 12, 0) + b"EXTXMPMARKER"
    extra = (
        _segment(0xED, b"Photoshop 3.0\x00" + irb)
        + _segment(0xE1, extended_xmp)
        + _segment(0xEB, b"JP\x00\x00\x00\x00\x00\x01jumbC2PAMARKER")
        + _segment(0xFE, b"taken at IPTCCITYMARKER")
    )
    data = out.getvalue()
    return data[:2] + extra + data[2:] + b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42TRAILERMARKER"


def located_png(orientation: int = 1) -> bytes:
    """A PNG with eXIf (GPS), XMP in iTXt, and location in tEXt and zTXt chunks."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_itxt("XML:com.adobe.xmp", XMP.decode())
    info.add_text("Location", "PNGTEXTMARKER")
    info.add_text("Comment", "PNGTEXTMARKER " * 20, zip=True)
    out = io.BytesIO()
    noise(40, 30).save(out, format="PNG", exif=located_exif(orientation), pnginfo=info)
    return out.getvalue()


def located_webp(orientation: int = 1) -> bytes:
    """A lossless WebP (VP8X) with EXIF (GPS) and XMP chunks."""
    out = io.BytesIO()
    noise(40, 30).save(out, format="WEBP", lossless=True, exif=located_exif(orientation), xmp=XMP)
    return out.getvalue()


def located_mpo() -> bytes:
    """A two-frame MPO (a phone's multi-picture JPEG): each frame has EXIF with GPS."""
    out = io.BytesIO()
    noise(64, 48, seed=1).save(
        out, format="MPO", save_all=True, append_images=[noise(64, 48, seed=2)], quality=90, exif=located_exif()
    )
    return out.getvalue()


def located_avif(orientation: int = 1) -> bytes:
    """A 64×32 AVIF, left half red and right half blue, with EXIF (GPS) and XMP (Pillow's own encoder)."""
    out = io.BytesIO()
    halves(64, 32).save(out, format="AVIF", quality=95, exif=located_exif(orientation), xmp=XMP)
    return out.getvalue()


def halves(width: int, height: int) -> Image.Image:
    image = Image.new("RGB", (width, height), (200, 30, 30))
    image.paste((30, 30, 200), (width // 2, 0, width, height))
    return image


def located_heic() -> bytes:
    """A 64×64 HEIC, left half red and right half blue, with EXIF (Make, GPS with GPSMapDatum
    "GPSMARKER") and XMP (exif:GPSLatitude, photoshop:City "XMPCITYMARKER").

    Stored, not made here: the service's plugin (pi-heif) only decodes. Made with pillow-heif 1.8.1
    (Pillow 13) in a throwaway venv::

        image = Image.new("RGB", (64, 64), (200, 30, 30)); image.paste((30, 30, 200), (32, 0, 64, 64))
        exif = Image.Exif(); exif[0x010F] = "FruitsTestCam"
        exif[0x8825] = {1: "N", 2: (48.0, 51.0, 24.0), 3: "E", 4: (2.0, 21.0, 3.0), 18: "GPSMARKER"}
        image.save(out, format="HEIF", exif=exif, xmp=<XMP with the two fields>, quality=90)
    """
    return base64.b64decode(_LOCATED_HEIC)


HEIC_MARKERS = (b"GPSMARKER", b"GPSLatitude", b"XMPCITYMARKER")
_LOCATED_HEIC = (
    "AAAAHGZ0eXBoZWljAAAAAG1pZjFoZWljbWlhZgAAAeFtZXRhAAAAAAAAACFoZGxyAAAAAAAAAABwaWN0AAAAAAAAAAAAAAAAAAAA"
    "AEZpbG9jAAAAAERAAAMAAQAAAAACBQABAAAAAAAAAC4AAgAAAAACMwABAAAAAAAAALoAAwAAAAAC7QABAAAAAAAAASgAAABiaWlu"
    "ZgAAAAAAAwAAABVpbmZlAgAAAAABAABodmMxAAAAABVpbmZlAgAAAQACAABFeGlmAAAAACppbmZlAgAAAQADAABtaW1lAGFwcGxp"
    "Y2F0aW9uL3JkZit4bWwAAAAAAA5waXRtAAAAAAABAAAA1mlwcnAAAAC3aXBjbwAAAHhodmNDAQNwAAAAkAAAAAAAHvAA/P34+AAA"
    "DwNgAAEAGEABDAH//wNwAAADAJAAAAMAAAMAHroCQGEAAQArQgEBA3AAAAMAkAAAAwAAAwAeoCCBBZbqSSmubgIaDAgAAAMAyAAA"
    "AwAIQGIAAQAHRAHBcrAiQAAAABNjb2xybmNseAABAA0ABoAAAAAUaXNwZQAAAAAAAABAAAAAQAAAABBwaXhpAAAAAAMICAgAAAAX"
    "aXBtYQAAAAAAAAABAAEEgQIDBAAAAChpcmVmAAAAAAAAAA5jZHNjAAIAAQABAAAADmNkc2MAAwABAAEAAAIYbWRhdAAAACooAa8G"
    "OFr8/Tf5Je///6pG+h/pNfmxS/wBq6X+5Bz//7bDzx8YaV/49X4AAAAGRXhpZgAATU0AKgAAAAgAAgEPAAIAAAAOAAAAJoglAAQA"
    "AAABAAAANAAAAABGcnVpdHNUZXN0Q2FtAAAFAAEAAgAAAAJOAAAAAAIABQAAAAMAAAB2AAMAAgAAAAJFAAAAAAQABQAAAAMAAACO"
    "ABIAAgAAAAoAAACmAAAAAAAAADAAAAABAAAAMwAAAAEAAAAYAAAAAQAAAAIAAAABAAAAFQAAAAEAAAADAAAAAUdQU01BUktFUgA8"
    "eDp4bXBtZXRhIHhtbG5zOng9ImFkb2JlOm5zOm1ldGEvIj48cmRmOlJERiB4bWxuczpyZGY9Imh0dHA6Ly93d3cudzMub3JnLzE5"
    "OTkvMDIvMjItcmRmLXN5bnRheC1ucyMiPjxyZGY6RGVzY3JpcHRpb24geG1sbnM6ZXhpZj0iaHR0cDovL25zLmFkb2JlLmNvbS9l"
    "eGlmLzEuMC8iIHhtbG5zOnBob3Rvc2hvcD0iaHR0cDovL25zLmFkb2JlLmNvbS9waG90b3Nob3AvMS4wLyIgZXhpZjpHUFNMYXRp"
    "dHVkZT0iNDgsNTEuNE4iIHBob3Rvc2hvcDpDaXR5PSJYTVBDSVRZTUFSS0VSIi8+PC9yZGY6UkRGPjwveDp4bXBtZXRhPg=="
)

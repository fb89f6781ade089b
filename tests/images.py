"""Test images made in memory (the dataset is only read, never copied)."""

from __future__ import annotations

import io

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

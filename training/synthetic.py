"""Synthetic "phone photos" of fruit made from Fruits-360 studio images.

Fruits-360 shows one specimen on a white background at 100×100 px; users photograph piles of
fruit in shops and kitchens. This module cuts the specimen out of its white background and
pastes several pieces of the *same* class, at random scale, position and in-plane rotation, on a
varied background (a blurred crop of a real photo, or a generated texture), then applies colour
and lighting jitter, blur, noise and JPEG re-compression.

Only numpy and Pillow are used. Everything is driven by the ``numpy.random.Generator`` passed in,
so a seeded generator gives the same images on every run (same Pillow/numpy versions).

Typical use::

    rng = np.random.default_rng(0)
    pieces = [fruit_cutout(Image.open(p)) for p in paths_of_one_class]
    backgrounds = [Image.open(p).convert("RGB") for p in background_paths]
    photo = synthetic_photo(rng, pieces, backgrounds, size=256)
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

WHITE_DISTANCE = 28
"""A pixel whose summed distance from pure white (0-765) is below this is background-like."""


def fruit_cutout(
    image: Image.Image, white_distance: int = WHITE_DISTANCE, erode: int = 1, feather: float = 0.8
) -> Image.Image:
    """The specimen of a white-background studio photo as an RGBA image cropped to its box.

    Background = near-white pixels connected to the image border (flood fill), so white
    highlights *inside* the fruit stay opaque. The mask is eroded by ``erode`` px (removes the
    bright fringe) and feathered with a Gaussian of radius ``feather``.
    """
    rgb = image.convert("RGB")
    arr = np.asarray(rgb, dtype=np.int16)
    near_white = (765 - arr.sum(axis=2)) < white_distance
    # .copy(): an image made by fromarray may share the numpy buffer, and ImageDraw edits on it
    # are then not seen (Pillow 12).
    mask = Image.fromarray(np.where(near_white, 255, 0).astype(np.uint8), "L").copy()
    w, h = mask.size
    border = [(x, 0) for x in range(0, w, 4)] + [(x, h - 1) for x in range(0, w, 4)]
    border += [(0, y) for y in range(0, h, 4)] + [(w - 1, y) for y in range(0, h, 4)]
    for xy in border:
        if mask.getpixel(xy) == 255:
            ImageDraw.floodfill(mask, xy, 128)
    alpha = np.where(np.asarray(mask) == 128, 0, 255).astype(np.uint8)
    alpha_img = Image.fromarray(alpha, "L")
    if erode > 0:
        alpha_img = alpha_img.filter(ImageFilter.MinFilter(2 * erode + 1))
    if feather > 0:
        alpha_img = alpha_img.filter(ImageFilter.GaussianBlur(feather))
    out = rgb.copy()
    out.putalpha(alpha_img)
    box = alpha_img.point(lambda v: 255 if v > 16 else 0).getbbox()
    return out.crop(box) if box else out


# --------------------------------------------------------------------------- backgrounds


def _value_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth random field in [0, 1], shape (size, size): bilinear upsampling of a coarse grid."""
    coarse = rng.random((cells, cells)).astype(np.float32)
    img = Image.fromarray((coarse * 255).astype(np.uint8), "L").resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.float32) / 255.0


def _random_colour(rng: np.random.Generator, muted: bool = True) -> np.ndarray:
    """An RGB colour in [0, 255]; ``muted`` favours the greys, browns and pastels of shops and tables."""
    if muted:
        base = rng.uniform(40, 230)
        return np.clip(base + rng.normal(0, 25, 3), 0, 255)
    return rng.uniform(0, 255, 3)


def generated_texture(rng: np.random.Generator, size: int) -> Image.Image:
    """A plausible surface: wood-like stripes, cloth weave, smooth blotches, tiles or a plain
    gradient, in random (mostly muted) colours, with mild sensor noise."""
    kind = rng.integers(0, 5)
    c1, c2 = _random_colour(rng), _random_colour(rng, muted=rng.random() < 0.7)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if kind == 0:  # wood grain: warped stripes
        warp = _value_noise(rng, size, int(rng.integers(3, 8)))
        angle = rng.uniform(0, math.pi)
        u = xx * math.cos(angle) + yy * math.sin(angle)
        t = 0.5 + 0.5 * np.sin(2 * math.pi * (u * rng.uniform(4, 20) + 2.0 * warp))
    elif kind == 1:  # cloth / basket weave
        f = rng.uniform(15, 60)
        t = (
            0.5
            + 0.25 * np.sin(2 * math.pi * xx * f) * np.sign(np.sin(2 * math.pi * yy * f / 2))
            + 0.25 * _value_noise(rng, size, 6)
        )
    elif kind == 2:  # smooth blotches (stone, paper, bag)
        t = 0.6 * _value_noise(rng, size, int(rng.integers(3, 10))) + 0.4 * _value_noise(
            rng, size, int(rng.integers(12, 40))
        )
    elif kind == 3:  # tiles / crate slats
        n = int(rng.integers(2, 8))
        t = ((np.floor(xx * n) + np.floor(yy * n * rng.uniform(0.2, 1.0))) % 2).astype(np.float32)
        t = 0.3 + 0.4 * t + 0.3 * _value_noise(rng, size, 8)
    else:  # plain surface with a lighting gradient
        angle = rng.uniform(0, 2 * math.pi)
        t = np.clip(0.5 + (xx - 0.5) * math.cos(angle) + (yy - 0.5) * math.sin(angle), 0, 1)
    t = np.clip(t, 0, 1)[..., None]
    arr = c1 * (1 - t) + c2 * t + rng.normal(0, rng.uniform(1, 6), (size, size, 1))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def photo_background(rng: np.random.Generator, photo: Image.Image, size: int) -> Image.Image:
    """A random crop of a real photo, resized to ``size`` and blurred enough (radius 4-12 px at
    256 px) that no produce in it stays recognisable: it contributes colour and light only."""
    w, h = photo.size
    side = int(min(w, h) * rng.uniform(0.3, 1.0))
    x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
    crop = photo.convert("RGB").crop((x0, y0, x0 + side, y0 + side)).resize((size, size), Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return crop.filter(ImageFilter.GaussianBlur(rng.uniform(4, 12) * size / 256))


# --------------------------------------------------------------------------- composition


def _jitter_piece(rng: np.random.Generator, piece: Image.Image) -> Image.Image:
    """Per-piece brightness/saturation jitter and a random flip (alpha untouched)."""
    rgb, alpha = piece.convert("RGB"), piece.getchannel("A")
    rgb = ImageEnhance.Brightness(rgb).enhance(rng.uniform(0.8, 1.15))
    rgb = ImageEnhance.Color(rgb).enhance(rng.uniform(0.85, 1.15))
    out = rgb.copy()
    out.putalpha(alpha)
    if rng.random() < 0.5:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return out


def _shadow(piece: Image.Image, strength: float, blur: float) -> Image.Image:
    """A soft dark RGBA shadow with the piece's silhouette."""
    alpha = piece.getchannel("A").filter(ImageFilter.GaussianBlur(blur)).point(lambda v: int(v * strength))
    shadow = Image.new("RGBA", piece.size, (0, 0, 0, 0))
    shadow.putalpha(alpha)
    return shadow


def _lighting(rng: np.random.Generator, image: Image.Image) -> Image.Image:
    """Global colour, contrast and brightness jitter plus a smooth illumination gradient."""
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.7, 1.25))
    image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.75, 1.25))
    image = ImageEnhance.Color(image).enhance(rng.uniform(0.75, 1.25))
    arr = np.asarray(image, dtype=np.float32)
    size = arr.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = rng.uniform(0, 2 * math.pi)
    grad = 1.0 + rng.uniform(0, 0.35) * ((xx - 0.5) * math.cos(angle) + (yy - 0.5) * math.sin(angle))
    cast = 1.0 + rng.normal(0, 0.04, 3)  # white balance
    arr = arr * grad[..., None] * cast
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _degrade(rng: np.random.Generator, image: Image.Image) -> Image.Image:
    """Camera and transmission artefacts: optional blur, sensor noise, JPEG re-compression."""
    if rng.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.5)))
    if rng.random() < 0.5:
        arr = np.asarray(image, dtype=np.float32) + rng.normal(0, rng.uniform(2, 8), (image.size[1], image.size[0], 1))
        image = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=int(rng.integers(35, 92)))
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def synthetic_photo(
    rng: np.random.Generator,
    fruit_images: Sequence[Image.Image],
    backgrounds: Sequence[Image.Image],
    size: int = 256,
    texture_share: float = 0.4,
) -> Image.Image:
    """One synthetic RGB photo (``size``×``size``) of several pieces of one fruit class.

    ``fruit_images``: RGBA cut-outs (see :func:`fruit_cutout`) of ONE class; pieces are drawn
    from them with replacement. ``backgrounds``: real photos to crop blurred backgrounds from
    (may be empty: then only generated textures are used); ``texture_share`` of the images get
    a generated texture instead.

    Layouts (chosen at random): "pile" — 6-18 overlapping small pieces covering most of the frame
    (a shop bin); "few" — 1-4 large pieces (a hand or a table). Pieces get a random scale,
    in-plane rotation, flip, brightness jitter and a soft drop shadow.
    """
    if not fruit_images:
        raise ValueError("fruit_images is empty")
    if backgrounds and rng.random() >= texture_share:
        canvas = photo_background(rng, backgrounds[int(rng.integers(len(backgrounds)))], size)
    else:
        canvas = generated_texture(rng, size)
    canvas = canvas.convert("RGBA")

    pile = rng.random() < 0.5
    if pile:
        count, scale_range = int(rng.integers(6, 19)), (0.22, 0.42)
    else:
        count, scale_range = int(rng.integers(1, 5)), (0.35, 0.75)
    base_scale = rng.uniform(*scale_range)
    # Place pieces back to front; later (front) ones a little bigger, like a bin seen from above.
    for i in range(count):
        piece = _jitter_piece(rng, fruit_images[int(rng.integers(len(fruit_images)))])
        longest = max(piece.size)
        target = base_scale * size * rng.uniform(0.85, 1.15) * (1.0 + 0.15 * i / max(count - 1, 1))
        factor = target / longest
        piece = piece.resize(
            (max(2, round(piece.size[0] * factor)), max(2, round(piece.size[1] * factor))), Image.Resampling.BICUBIC
        )
        piece = piece.rotate(rng.uniform(0, 360), resample=Image.Resampling.BICUBIC, expand=True)
        pw, ph = piece.size
        if pile:
            cx, cy = rng.uniform(0.0, 1.0) * size, rng.uniform(0.0, 1.0) * size
        else:
            cx, cy = rng.uniform(0.2, 0.8) * size, rng.uniform(0.2, 0.8) * size
        x, y = int(cx - pw / 2), int(cy - ph / 2)
        if rng.random() < 0.7:
            off = max(1, int(0.04 * pw))
            _paste_clipped(canvas, _shadow(piece, rng.uniform(0.3, 0.6), 0.05 * pw), x + off, y + off)
        _paste_clipped(canvas, piece, x, y)

    image = _lighting(rng, canvas.convert("RGB"))
    return _degrade(rng, image)


def _paste_clipped(canvas: Image.Image, piece: Image.Image, x: int, y: int) -> None:
    """alpha_composite ``piece`` at (x, y), clipping what falls outside the canvas."""
    cw, ch = canvas.size
    pw, ph = piece.size
    left, top = max(0, -x), max(0, -y)
    right, bottom = min(pw, cw - x), min(ph, ch - y)
    if right <= left or bottom <= top:
        return
    canvas.alpha_composite(piece.crop((left, top, right, bottom)), (x + left, y + top))


def empty_scene(rng: np.random.Generator, backgrounds: Sequence[Image.Image], size: int = 256) -> Image.Image:
    """A background with no fruit at all (texture or blurred photo crop), degraded like a photo."""
    if backgrounds and rng.random() < 0.5:
        image = photo_background(rng, backgrounds[int(rng.integers(len(backgrounds)))], size)
    else:
        image = generated_texture(rng, size)
    return _degrade(rng, _lighting(rng, image))


__all__ = ["fruit_cutout", "generated_texture", "photo_background", "synthetic_photo", "empty_scene"]


def augmented_photo(rng: np.random.Generator, photo: Image.Image) -> Image.Image:
    """A training copy of a real photo, as the featurizer was fine-tuned on (MODEL_CARD.md):
    a crop of 70–100 % of its area (aspect 3/4–4/3), a mirror half the time, and brightness,
    contrast and saturation each scaled by 0.75–1.25."""
    width, height = photo.size
    for _ in range(10):  # a crop that fits: almost always the first draw
        area = width * height * rng.uniform(0.7, 1.0)
        aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        crop_w, crop_h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if crop_w <= width and crop_h <= height:
            left, top = rng.integers(0, width - crop_w + 1), rng.integers(0, height - crop_h + 1)
            photo = photo.crop((left, top, left + crop_w, top + crop_h))
            break
    if rng.random() < 0.5:
        photo = photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        photo = enhancer(photo).enhance(rng.uniform(0.75, 1.25))
    return photo

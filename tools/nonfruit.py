"""Seeded generator of NON-fruit test images: noise, blank, gradient frames and rendered text.

FOR TESTING ONLY: it measures how often the classifier answers "unsure" on inputs that are not
photos of produce. Training (and threshold selection) never sees its output; nothing in
``training/`` or ``core/`` imports it (the import-linter layers forbid it).

    python -m tools.nonfruit OUT_DIR [--count 500] [--seed 8]   # OUT_DIR/not-a-fruit/<kind>-NNNN.png
    fruits evaluate --offline OUT_DIR                            # share answered unsure

Four kinds in equal shares (count // 4 each, the remainder going to the first kinds):
``noise`` (uniform, Gaussian, salt-and-pepper, coloured blocky noise), ``blank`` (one flat colour,
including white and black, sometimes with faint sensor noise), ``gradient`` (linear or radial
gradients, some with a solid or gradient frame/border, as in a screenshot or a photo frame),
``text`` (random words, digits and punctuation rendered in random colours, sizes and angles on
a plain or gradient page). Sizes vary (64-640 px, not always square) as uploads do.
"""

from __future__ import annotations

import math
import string
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tools import tool_parser

KINDS = ("noise", "blank", "gradient", "text")
_WORDS = (
    "invoice total receipt hello world lorem ipsum dolor sit amet price offer sale kg per item "
    "thank you order number date page chapter error warning login password meeting agenda"
).split()


def _size(rng: np.random.Generator) -> tuple[int, int]:
    w = int(rng.integers(64, 641))
    h = w if rng.random() < 0.5 else int(rng.integers(64, 641))
    return w, h


def noise_image(rng: np.random.Generator) -> Image.Image:
    w, h = _size(rng)
    kind = rng.integers(0, 4)
    if kind == 0:
        arr = rng.integers(0, 256, (h, w, 3))
    elif kind == 1:
        arr = rng.normal(rng.uniform(60, 200), rng.uniform(10, 80), (h, w, 1 if rng.random() < 0.5 else 3))
        arr = np.broadcast_to(arr, (h, w, 3))
    elif kind == 2:
        arr = np.full((h, w, 3), rng.uniform(0, 255, 3))
        sp = rng.random((h, w))
        arr[sp < 0.1] = 0
        arr[sp > 0.9] = 255
    else:
        cells = int(rng.integers(2, 24))
        small = rng.integers(0, 256, (cells, cells, 3)).astype(np.uint8)
        return Image.fromarray(small, "RGB").resize((w, h), Image.Resampling.NEAREST)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def blank_image(rng: np.random.Generator) -> Image.Image:
    w, h = _size(rng)
    r = rng.random()
    colour = (255, 255, 255) if r < 0.15 else (0, 0, 0) if r < 0.3 else tuple(int(c) for c in rng.integers(0, 256, 3))
    arr = np.full((h, w, 3), colour, dtype=np.float32)
    if rng.random() < 0.5:
        arr += rng.normal(0, rng.uniform(0.5, 4), (h, w, 1))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def gradient_image(rng: np.random.Generator) -> Image.Image:
    w, h = _size(rng)
    c1, c2 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    xx, yy = xx / w, yy / h
    if rng.random() < 0.6:
        a = rng.uniform(0, 2 * math.pi)
        t = (xx - 0.5) * math.cos(a) + (yy - 0.5) * math.sin(a) + 0.5
    else:
        cx, cy = rng.uniform(0.2, 0.8, 2)
        t = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) / rng.uniform(0.4, 1.0)
    t = np.clip(t, 0, 1)[..., None]
    arr = c1 * (1 - t) + c2 * t
    if rng.random() < 0.6:  # a frame: border of another colour/gradient around the inner area
        bw = int(min(w, h) * rng.uniform(0.04, 0.2))
        frame = rng.uniform(0, 255, 3) if rng.random() < 0.5 else c2 * (1 - t) + c1 * t
        mask = np.zeros((h, w, 1), dtype=bool)
        mask[:bw], mask[-bw:], mask[:, :bw], mask[:, -bw:] = True, True, True, True
        arr = np.where(mask, frame, arr)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def text_image(rng: np.random.Generator) -> Image.Image:
    w, h = _size(rng)
    bg = tuple(int(c) for c in (rng.integers(200, 256, 3) if rng.random() < 0.6 else rng.integers(0, 256, 3)))
    image = Image.new("RGB", (w, h), bg)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 12))):
        if rng.random() < 0.7:
            text = " ".join(_WORDS[int(i)] for i in rng.integers(0, len(_WORDS), int(rng.integers(1, 6))))
        else:
            text = "".join(
                rng.choice(list(string.ascii_letters + string.digits + ".,:;!?€$%"), int(rng.integers(3, 20)))
            )
        font = ImageFont.load_default(size=float(rng.uniform(10, max(12, h / 5))))
        fg = tuple(int(c) for c in rng.integers(0, 256, 3)) if rng.random() < 0.4 else (0, 0, 0)
        draw.text((float(rng.uniform(-0.1, 0.8) * w), float(rng.uniform(-0.05, 0.9) * h)), text, fill=fg, font=font)
    if rng.random() < 0.3:
        image = image.rotate(float(rng.uniform(-30, 30)), expand=False, fillcolor=bg)
    return image


_GENERATORS = {"noise": noise_image, "blank": blank_image, "gradient": gradient_image, "text": text_image}


def nonfruit_images(seed: int = 8, count: int = 500) -> Iterator[tuple[str, Image.Image]]:
    """``count`` (kind, RGB image) pairs, deterministic for a given ``seed``."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        kind = KINDS[i % len(KINDS)]
        yield kind, _GENERATORS[kind](rng)


def write_nonfruit(out_dir: Path, count: int, seed: int) -> Path:
    """Write ``count`` images as PNG into ``out_dir/not-a-fruit/`` (the folder ``fruits evaluate``
    reads as "nothing in the catalog"); returns that folder."""
    from tools.evaluate import NOT_A_FRUIT_FOLDER

    folder = out_dir / NOT_A_FRUIT_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for index, (kind, image) in enumerate(nonfruit_images(seed, count)):
        image.save(folder / f"{kind}-{index:04d}.png")
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = tool_parser("python -m tools.nonfruit", __doc__)
    parser.add_argument("out_dir", type=Path, help="folder to write not-a-fruit/ into")
    parser.add_argument("--count", type=int, default=500, help="images to write (default: 500)")
    parser.add_argument("--seed", type=int, default=8, help="seed (default: 8)")
    args = parser.parse_args(argv)
    folder = write_nonfruit(args.out_dir, args.count, args.seed)
    print(f"wrote {args.count} non-fruit images to {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

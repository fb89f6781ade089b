"""Data sets, labels and CV folds for the issue-8 experiments (read-only data, caches in cache/).

Labels:
* ``variety``: a Fruits-360 class name (the catalog's ``label``) or, for a GroceryStore photo,
  ``"GS:<fine class>"``; ``"not ours"`` for GroceryStore's not-in-catalog classes and empty scenes.
* ``type``: the GroceryStore README's "our type" vocabulary (apple, bell pepper, potato, melon,
  grapefruit, ...). Catalog foods are mapped onto it (e.g. green/red/yellow bell pepper -> bell
  pepper); catalog foods GroceryStore never shows keep their own name.

Folds (5): GroceryStore train photos — within each fine class, files sorted by number and cut into
5 contiguous blocks (consecutive photos are often of the same bin, so they stay together).
Fruits-360 Training — within each class, frames sorted by index and cut into 5 contiguous blocks
(consecutive frames of the rotating fruit are near duplicates). Synthetic images carry the fold of
the Fruits-360 frames and GroceryStore background they were made from. CV fold k holds out all
three fold-k parts at once.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

REPO = Path(__file__).resolve().parents[3]
F360 = REPO.parent / "shared" / "data" / "fruits360"
GS = REPO.parent / "shared" / "data" / "grocerystore"
CATALOG = Path(__file__).with_name("catalog_foods.json")  # copied label->food map of core/catalog/fruits.json
CACHE = Path(__file__).with_name("cache")  # git-ignored
NOT_OURS = "not ours"
NFOLDS = 5

# catalog food -> GroceryStore-README type (only where they differ)
FOOD_TO_TYPE = {
    "kiwifruit": "kiwi", "ginger root": "ginger", "white cabbage": "cabbage",
    "green bell pepper": "bell pepper", "red bell pepper": "bell pepper", "yellow bell pepper": "bell pepper",
    "red potato": "potato", "white potato": "potato", "pink grapefruit": "grapefruit",
    "white grapefruit": "grapefruit", "honeydew melon": "melon", "green tomato": "tomato",
    "yellow tomato": "tomato",
}
# GroceryStore coarse (or coarse/fine) -> type
GS_TYPE = {
    "Apple": "apple", "Avocado": "avocado", "Banana": "banana", "Kiwi": "kiwi", "Lemon": "lemon", "Lime": "lime",
    "Mango": "mango", "Melon/Cantaloupe": "cantaloupe", "Melon/Galia-Melon": "melon", "Melon/Honeydew-Melon": "melon",
    "Melon/Watermelon": "watermelon", "Nectarine": "nectarine", "Orange": "orange", "Papaya": "papaya",
    "Passion-Fruit": "passion fruit", "Peach": "peach", "Pear": "pear", "Pineapple": "pineapple", "Plum": "plum",
    "Pomegranate": "pomegranate", "Red-Grapefruit": "grapefruit", "Satsumas": "mandarin", "Aubergine": "eggplant",
    "Cabbage": "cabbage", "Carrots": "carrot", "Cucumber": "cucumber", "Ginger": "ginger", "Onion": "onion",
    "Pepper": "bell pepper", "Potato": "potato", "Potato/Sweet-Potato": "sweet potato", "Red-Beet": "beetroot",
    "Tomato": "tomato", "Zucchini": "zucchini",
    "Asparagus": NOT_OURS, "Brown-Cap-Mushroom": NOT_OURS, "Garlic": NOT_OURS, "Leek": NOT_OURS,
}


def variety_to_type() -> dict[str, str]:
    foods = json.loads(CATALOG.read_text())
    return {label: FOOD_TO_TYPE.get(food, food) for label, food in foods.items()}


def gs_type(rel: Path) -> str:
    """Type of a GroceryStore photo from its path relative to the split folder."""
    parts = rel.parts  # (Fruit|Vegetables, coarse, [fine,] file)
    coarse = parts[1]
    if len(parts) == 4 and f"{coarse}/{parts[2]}" in GS_TYPE:
        return GS_TYPE[f"{coarse}/{parts[2]}"]
    return GS_TYPE[coarse]


def _frame_index(p: Path) -> tuple[int, int]:
    nums = [int(n) for n in re.findall(r"\d+", p.stem)]
    return (1 if p.stem.startswith("r") else 0, nums[-2] if len(nums) >= 2 else nums[0])


def f360_split(split: str, per_class: int | None = None) -> list[tuple[Path, str, int]]:
    """(path, variety, fold) for Fruits-360 ``split``; ``per_class`` evenly spaced frames per class."""
    out = []
    for cdir in sorted((F360 / split).iterdir()):
        files = sorted(cdir.glob("*.jpg"), key=_frame_index)
        folds = [i * NFOLDS // len(files) for i in range(len(files))]
        idx = range(len(files)) if per_class is None else np.linspace(0, len(files) - 1, per_class).round().astype(int)
        out += [(files[i], cdir.name, folds[i]) for i in sorted(set(idx))]
    return out


def gs_split(split: str) -> list[tuple[Path, str, str, int]]:
    """(path, fine class, type, fold) for GroceryStore ``split`` ('train' or 'val')."""
    root = GS / split
    groups: dict[str, list[Path]] = {}
    for p in sorted(root.rglob("*.jpg")):
        rel = p.relative_to(root)
        fine = "/".join(rel.parts[1:-1])
        groups.setdefault(fine, []).append(p)
    out = []
    for fine, files in sorted(groups.items()):
        files.sort(key=lambda q: int(re.findall(r"\d+", q.stem)[-1]))
        for i, p in enumerate(files):
            out.append((p, fine, gs_type(p.relative_to(root)), i * NFOLDS // len(files)))
    return out


def load_rgb(path: Path) -> Image.Image:
    """Decode, EXIF-transpose, alpha onto white, RGB (as the project's preprocess does)."""
    image = ImageOps.exif_transpose(Image.open(path))
    if image.mode in ("RGBA", "LA", "P", "PA"):
        image = image.convert("RGBA")
        bg = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(bg, image)
    return image.convert("RGB")


def to_input(image: Image.Image, size: int, mode: str = "pad") -> np.ndarray:
    """uint8 (size, size, 3). ``pad``: fit inside and pad with white (the project's preprocess);
    ``crop``: resize the short side to ``size`` and centre-crop."""
    if mode == "pad":
        out = image if image.size == (size, size) else ImageOps.pad(image, (size, size), method=Image.Resampling.BILINEAR, color=(255, 255, 255))
    elif mode == "crop":
        out = ImageOps.fit(image, (size, size), method=Image.Resampling.BILINEAR)
    else:
        raise ValueError(mode)
    return np.asarray(out, dtype=np.uint8)

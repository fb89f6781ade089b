"""Decode the training-side images once into uint8 arrays under cache/ (never the test sets).

cache/f360.npz   Fruits-360 Training, 50 evenly spaced frames per class, 100 px
cache/gs.npz     GroceryStore train, 348 px square: x padded, xc centre-cropped
cache/synth.npz  synthetic photos (synthetic.py), SYNTH_PER_CLASS per Fruits-360 class, 256 px
cache/empty.npz  EMPTY empty scenes (background only), 256 px, label "not ours"
"""

from __future__ import annotations

import sys
from pathlib import Path
import time

import numpy as np
from PIL import Image

from data import CACHE, NFOLDS, f360_split, gs_split, load_rgb, to_input
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repo: training.synthetic
from training.synthetic import empty_scene, fruit_cutout, synthetic_photo  # noqa: E402

SYNTH_PER_CLASS = int(sys.argv[1]) if len(sys.argv) > 1 else 30
EMPTY = 300
SYNTH_SIZE = 256
SEED = 8


def main() -> None:
    CACHE.mkdir(exist_ok=True)
    t0 = time.time()
    if not (CACHE / "f360.npz").exists():
        f = f360_split("Training", 50)
        np.savez(CACHE / "f360.npz", x=np.stack([np.asarray(load_rgb(p)) for p, _, _ in f]),
                 variety=np.array([v for _, v, _ in f]), fold=np.array([k for *_, k in f]))
        print("f360", len(f), time.time() - t0, flush=True)
    gs = gs_split("train")
    if not (CACHE / "gs.npz").exists():
        imgs = [load_rgb(p) for p, *_ in gs]
        # 135 of 1,776 photos are 348x464 or 464x348: keep a padded (white) and a centre-cropped square
        np.savez(CACHE / "gs.npz", x=np.stack([to_input(im, 348, "pad") for im in imgs]),
                 xc=np.stack([to_input(im, 348, "crop") for im in imgs]),
                 fine=np.array([f for _, f, _, _ in gs]), type=np.array([t for _, _, t, _ in gs]),
                 fold=np.array([k for *_, k in gs]), path=np.array([str(p) for p, *_ in gs]))
        print("gs", len(gs), time.time() - t0, flush=True)
    bgs_by_fold = {k: [load_rgb(p) for p, _, _, f in gs if f == k] for k in range(NFOLDS)}
    name = f"synth{SYNTH_PER_CLASS}.npz"
    if not (CACHE / name).exists():
        rng = np.random.default_rng(SEED)
        full = f360_split("Training")
        by_class: dict[tuple[str, int], list] = {}
        for p, v, k in full:
            by_class.setdefault((v, k), []).append(p)
        classes = sorted({v for _, v, _ in full})
        xs, vs, ks = [], [], []
        for c in classes:
            cuts = {k: [fruit_cutout(Image.open(p)) for p in by_class[(c, k)]] for k in range(NFOLDS)}
            for i in range(SYNTH_PER_CLASS):
                k = i % NFOLDS
                xs.append(np.asarray(synthetic_photo(rng, cuts[k], bgs_by_fold[k], SYNTH_SIZE)))
                vs.append(c); ks.append(k)
        np.savez(CACHE / name, x=np.stack(xs), variety=np.array(vs), fold=np.array(ks))
        print("synth", len(xs), time.time() - t0, flush=True)
    if not (CACHE / "empty.npz").exists():
        rng = np.random.default_rng(SEED + 1)
        xs = [np.asarray(empty_scene(rng, bgs_by_fold[i % NFOLDS], SYNTH_SIZE)) for i in range(EMPTY)]
        np.savez(CACHE / "empty.npz", x=np.stack(xs), fold=np.arange(EMPTY) % NFOLDS)
        print("empty", EMPTY, time.time() - t0, flush=True)


if __name__ == "__main__":
    main()

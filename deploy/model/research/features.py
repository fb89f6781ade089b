"""Featurize the cached training-side images with one ONNX featurizer (onnxruntime, 2 threads).

    python features.py models/efficientnet-lite0_192.onnx [set ...]

Writes feats/<model stem>/<set>.npy for sets: f360, gs (padded), gsc (centre-cropped), synth30,
empty. Images are resized to the model's side with PIL bilinear (as the project's preprocess).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from data import CACHE

FEATS = Path(__file__).with_name("feats")


def session(model: Path, threads: int = 2) -> ort.InferenceSession:
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(model), o, providers=["CPUExecutionProvider"])


def model_size(model: Path) -> int:
    return int(model.stem.rsplit("_", 1)[1])


def featurize(sess: ort.InferenceSession, images: np.ndarray, size: int, batch: int = 64) -> np.ndarray:
    out = []
    for i in range(0, len(images), batch):
        chunk = images[i : i + batch]
        if chunk.shape[1] != size:
            chunk = np.stack([np.asarray(Image.fromarray(a).resize((size, size), Image.Resampling.BILINEAR)) for a in chunk])
        out.append(sess.run(["features"], {"image": np.ascontiguousarray(chunk)})[0])
    return np.concatenate(out).astype(np.float32)


SOURCES = {"f360": ("f360.npz", "x"), "gs": ("gs.npz", "x"), "gsc": ("gs.npz", "xc"),
           "synth30": ("synth30.npz", "x"), "empty": ("empty.npz", "x")}


def main() -> None:
    model = Path(sys.argv[1])
    sets = sys.argv[2:] or list(SOURCES)
    size = model_size(model)
    sess = session(model)
    outdir = FEATS / model.stem
    outdir.mkdir(parents=True, exist_ok=True)
    for name in sets:
        target = outdir / f"{name}.npy"
        if target.exists():
            continue
        file, key = SOURCES[name]
        t0 = time.time()
        x = np.load(CACHE / file)[key]
        np.save(target, featurize(sess, x, size))
        print(f"{model.stem} {name} {len(x)} imgs {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()

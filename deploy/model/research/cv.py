"""5-fold CV of frozen features + (PCA) + multinomial logistic regression.

Training data per fold: Fruits-360 Training frames (variety labels) + GroceryStore train photos
(label "GS:<fine class>", or "not ours" for the 4 not-in-catalog classes) + optional synthetic
photos (variety labels) + optional empty scenes ("not ours"), all minus fold k.
Scores on fold k: GroceryStore type top-1 on in-catalog photos, Fruits-360 variety top-1.

Joint classifier: P(type) = sum of P(class) over the classes of that type; predicted variety =
the most probable Fruits-360 variety within the predicted type.

    python cv.py --model efficientnet-lite0_192 [--synth] [--empty] [--pca 0.98] [--C 1.0]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from data import CACHE, NFOLDS, NOT_OURS, variety_to_type

FEATS = Path(__file__).with_name("feats")
GS_FOLDS = "block"  # or "cluster" (cluster_folds.py): set by --gs-folds


def load_sets(model: str, synth: bool, empty: bool, gs_set: str = "gs") -> dict[str, np.ndarray]:
    d = FEATS / model
    vt = variety_to_type()
    f = np.load(CACHE / "f360.npz")
    g = np.load(CACHE / "gs.npz")
    parts = []  # (X, label, type, fold, source)
    parts.append((np.load(d / "f360.npy"), f["variety"], np.array([vt[v] for v in f["variety"]]), f["fold"], "f360"))
    glabel = np.array([NOT_OURS if t == NOT_OURS else f"GS:{fi}" for fi, t in zip(g["fine"], g["type"])])
    gfold = np.load(CACHE / "gs_cluster_folds.npy") if GS_FOLDS == "cluster" else g["fold"]
    parts.append((np.load(d / f"{gs_set}.npy"), glabel, g["type"], gfold, "gs"))
    if synth:
        s = np.load(CACHE / "synth30.npz")
        parts.append((np.load(d / "synth30.npy"), s["variety"], np.array([vt[v] for v in s["variety"]]), s["fold"], "synth"))
    if empty or (d / "empty.npy").exists():  # always held out for scoring; trained on only if ``empty``
        e = np.load(CACHE / "empty.npz")
        n = len(e["fold"])
        parts.append((np.load(d / "empty.npy"), np.array([NOT_OURS] * n), np.array([NOT_OURS] * n), e["fold"], "empty"))
    return {
        "X": np.concatenate([p[0] for p in parts]),
        "label": np.concatenate([p[1] for p in parts]),
        "type": np.concatenate([p[2] for p in parts]),
        "fold": np.concatenate([p[3] for p in parts]),
        "source": np.concatenate([[p[4]] * len(p[0]) for p in parts]),
    }


class Joint:
    """StandardScaler -> optional PCA -> multinomial LR over the joint label space."""

    def __init__(self, C: float, pca: float | int | None, max_iter: int = 300) -> None:
        self.C, self.pca, self.max_iter = C, pca, max_iter

    def fit(self, X: np.ndarray, label: np.ndarray, label_type: dict[str, str], weight: np.ndarray | None = None) -> "Joint":
        self.scaler = StandardScaler().fit(X)
        Z = self.scaler.transform(X)
        self.proj = PCA(n_components=self.pca, svd_solver="full", random_state=0).fit(Z) if self.pca else None
        if self.proj is not None:
            Z = self.proj.transform(Z)
        self.lr = LogisticRegression(C=self.C, max_iter=self.max_iter, tol=1e-4).fit(Z, label, sample_weight=weight)
        self.classes = self.lr.classes_
        self.types = np.array(sorted(set(label_type[c] for c in self.classes)))
        self.class_type_idx = np.searchsorted(self.types, [label_type[c] for c in self.classes])
        return self

    def logits(self, X: np.ndarray) -> np.ndarray:
        Z = self.scaler.transform(X)
        if self.proj is not None:
            Z = self.proj.transform(Z)
        return self.lr.decision_function(Z)


def class_types(labels: np.ndarray, types: np.ndarray) -> dict[str, str]:
    return dict(zip(labels.tolist(), types.tolist()))


def softmax(z: np.ndarray, T: float = 1.0) -> np.ndarray:
    z = z / T
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def type_probs(p: np.ndarray, class_type_idx: np.ndarray, ntypes: int) -> np.ndarray:
    out = np.zeros((len(p), ntypes))
    np.add.at(out.T, class_type_idx, p.T)
    return out


def run_cv(model: str, synth: bool, empty: bool, pca, C: float, gs_weight: float = 1.0, gs_set: str = "gs",
           folds: list[int] | None = None, synth_weight: float = 1.0, label_mode: str = "joint") -> dict:
    D = load_sets(model, synth, empty, gs_set)
    if label_mode == "type":  # option (b): one classifier over types (no varieties, no GS fine classes)
        D["label"] = D["type"].copy()
    lt = class_types(D["label"], D["type"])
    classes = np.array(sorted(set(D["label"])))
    oof = np.full((len(D["X"]), len(classes)), np.nan, dtype=np.float32)
    t0 = time.time()
    for k in folds if folds is not None else range(NFOLDS):
        tr = (D["fold"] != k) & ((D["source"] != "empty") | empty)
        te = (D["fold"] == k) & np.isin(D["source"], ["f360", "gs", "empty"])
        w = np.where(D["source"][tr] == "gs", gs_weight, np.where(D["source"][tr] == "synth", synth_weight, 1.0))
        m = Joint(C, pca).fit(D["X"][tr], D["label"][tr], lt, w)
        z = m.logits(D["X"][te])
        cols = np.searchsorted(classes, m.classes)
        full = np.full((te.sum(), len(classes)), -1e4, dtype=np.float32)
        full[:, cols] = z
        oof[te] = full
    fit_s = (time.time() - t0) / (len(folds) if folds is not None else NFOLDS)
    res = evaluate(oof, D, classes, lt)
    res.update(model=model, synth=synth, empty=empty, pca=pca, C=C, gs_weight=gs_weight, gs_set=gs_set,
               synth_weight=synth_weight, label_mode=label_mode, fit_s_per_fold=round(fit_s, 1))
    return res, oof, D, classes, lt


def predict(logits: np.ndarray, classes: np.ndarray, lt: dict[str, str], T: float = 1.0):
    """(type names, type max prob, variety) per row; variety = best Fruits-360 class in the type."""
    types = np.array(sorted(set(lt[c] for c in classes)))
    cti = np.searchsorted(types, [lt[c] for c in classes])
    p = softmax(logits, T)
    tp = type_probs(p, cti, len(types))
    ti = tp.argmax(1)
    is_variety = np.array([not (c.startswith("GS:") or c == NOT_OURS) for c in classes])
    masked = np.where((cti[None, :] == ti[:, None]) & is_variety[None, :], p, -1)
    var = np.where(masked.max(1) >= 0, classes[masked.argmax(1)], "")
    return types[ti], tp.max(1), var


def evaluate(oof: np.ndarray, D: dict, classes: np.ndarray, lt: dict[str, str], T: float = 1.0) -> dict:
    ok = ~np.isnan(oof).any(1)
    ptype, pmax, pvar = predict(np.nan_to_num(oof[ok]), classes, lt, T)
    src, typ, lab = D["source"][ok], D["type"][ok], D["label"][ok]
    gs_in = (src == "gs") & (typ != NOT_OURS)
    gs_out = (src == "gs") & (typ == NOT_OURS)
    f = src == "f360"
    return {
        "gs_type_acc": round(float((ptype[gs_in] == typ[gs_in]).mean()), 4),
        "gs_notours_as_notours": round(float((ptype[gs_out] == NOT_OURS).mean()), 4),
        "f360_var_acc": round(float((pvar[f] == lab[f]).mean()), 4),
        "f360_type_acc": round(float((ptype[f] == typ[f]).mean()), 4),
        "empty_as_notours": round(float((ptype[src == "empty"] == NOT_OURS).mean()), 4) if (src == "empty").any() else None,
        "n_gs_in": int(gs_in.sum()), "n_f360": int(f.sum()),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--synth", action="store_true")
    ap.add_argument("--empty", action="store_true")
    ap.add_argument("--pca", default="none")
    ap.add_argument("--C", type=float, default=1.0)
    ap.add_argument("--gs-weight", type=float, default=1.0)
    ap.add_argument("--synth-weight", type=float, default=1.0)
    ap.add_argument("--gs-set", default="gs")
    ap.add_argument("--folds", default=None, help="e.g. 0,1 to run a subset")
    ap.add_argument("--save-oof", default=None)
    ap.add_argument("--labels", default="joint", choices=["joint", "type"])
    ap.add_argument("--gs-folds", default="block", choices=["block", "cluster"])
    a = ap.parse_args()
    global GS_FOLDS
    GS_FOLDS = a.gs_folds
    pca = None if a.pca == "none" else (float(a.pca) if "." in a.pca else int(a.pca))
    folds = [int(x) for x in a.folds.split(",")] if a.folds else None
    res, oof, D, classes, lt = run_cv(a.model, a.synth, a.empty, pca, a.C, a.gs_weight, a.gs_set, folds, a.synth_weight, a.labels)
    res["gs_folds"] = a.gs_folds
    print(json.dumps(res), flush=True)
    with open(Path(__file__).with_name("cv_results.jsonl"), "a") as fh:
        fh.write(json.dumps(res) + "\n")
    if a.save_oof:
        np.savez(a.save_oof, oof=oof, classes=classes, source=D["source"], type=D["type"], label=D["label"], fold=D["fold"])


if __name__ == "__main__":
    main()

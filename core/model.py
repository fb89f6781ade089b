"""PCA, classifier and the versioned model bundle in the S3 model store.

Bundle format (format 2, ``core.manifest.BUNDLE_FORMAT``), under ``s3://<model bucket>/``::

    bundles/<version>/manifest.json   what, when, from which data, how it scored (``core.manifest``)
    bundles/<version>/pca.npz         mean (d,), components (k, d), explained_variance_ratio (k,)
    bundles/<version>/classifier.npz  labels (C,), coef (C, k), intercept (C,), label_types (C,),
                                      temperature, unsure_below (both scalars; absent before types)
    current.json                      {"version": "<version>", "previous": [...]}: the bundle services
                                      use, and the ones current before it (newest first), for rollback

A bundle is written first and ``current.json`` moved after, so readers never see a
half-written bundle. Versions sort by time (``YYYYMMDDTHHMMSSZ-<hex>``). The PCA is
computed from mergeable statistics (count, sum, sum of outer products), so the local
trainer and a distributed job fit the very same model. ``save`` writes the format from
the constant (a manifest cannot carry another); ``load`` reads formats 2 and 1 (format 1
had the same files and an untyped manifest, converted on reading) and refuses others.
"""

from __future__ import annotations

import io
import json
import logging
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from datetime import datetime, timezone
from typing import Any

import numpy as np
from botocore.exceptions import ClientError

from core.errors import DependencyError, Reason, RecordError
from core.manifest import Manifest
from core.s3 import s3_dependency

log = logging.getLogger(__name__)

CURRENT_KEY = "current.json"
KEEP_PREVIOUS = 20
"""How many formerly current bundles ``current.json`` remembers for rollback."""


def new_version() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + secrets.token_hex(3)


@dataclass
class PcaStats:
    """Exact, mergeable statistics of a stream of feature vectors."""

    count: int
    total: np.ndarray  # (d,) sum of vectors
    outer: np.ndarray  # (d, d) sum of outer products

    @classmethod
    def empty(cls, dim: int) -> PcaStats:
        return cls(0, np.zeros(dim), np.zeros((dim, dim)))

    def add(self, vectors: np.ndarray) -> None:
        x = np.asarray(vectors, dtype=np.float64)
        self.count += len(x)
        self.total += x.sum(axis=0)
        self.outer += x.T @ x

    def merge(self, other: PcaStats) -> PcaStats:
        return PcaStats(self.count + other.count, self.total + other.total, self.outer + other.outer)

    def fit(self, min_explained_variance: float, max_components: int | None = None) -> Pca:
        """The PCA with the fewest components explaining ``min_explained_variance`` of the variance."""
        if self.count < 2:
            raise ValueError(f"need at least 2 vectors to fit a PCA, have {self.count}")
        mean = self.total / self.count
        covariance = (self.outer - self.count * np.outer(mean, mean)) / (self.count - 1)
        eigenvalues, eigenvectors = np.linalg.eigh(covariance)
        order = np.argsort(eigenvalues)[::-1]
        eigenvalues = np.clip(eigenvalues[order], 0, None)
        ratio = eigenvalues / eigenvalues.sum()
        k = int(np.searchsorted(np.cumsum(ratio), min_explained_variance) + 1)
        k = min(k, max_components or k, len(ratio))
        components = eigenvectors[:, order[:k]].T
        # Fix each component's sign (largest |loading| positive) so refits are comparable.
        signs = np.sign(components[np.arange(k), np.abs(components).argmax(axis=1)])
        return Pca(mean.astype(np.float32), (components * signs[:, None]).astype(np.float32), ratio[:k])


@dataclass(frozen=True)
class Pca:
    mean: np.ndarray  # (d,)
    components: np.ndarray  # (k, d)
    explained_variance_ratio: np.ndarray  # (k,)

    @property
    def k(self) -> int:
        return len(self.components)

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        return (np.asarray(vectors, dtype=np.float32) - self.mean) @ self.components.T


NOT_OURS = "not ours"
"""Label, and type, of the class of photos that show nothing from the catalog (trained on
photos of other produce): its probability counts against every fruit type."""
TOP_K = 5


@dataclass(frozen=True)
class Answer:
    """What the classifier makes of one photo (the Prediction's model fields)."""

    label: str
    """The most probable catalog variety within ``fruit_type``."""
    confidence: float
    top5: tuple[tuple[str, float], ...]
    """The most probable catalog varieties, with their probabilities."""
    fruit_type: str
    """The most probable catalog type (never ``NOT_OURS``): the sum over the classes of that type."""
    type_confidence: float
    top5_types: tuple[tuple[str, float], ...]
    unsure: bool
    """``type_confidence`` is below the calibrated threshold, or the photo looks like nothing of ours."""


@dataclass(frozen=True)
class Classifier:
    """Multinomial logistic regression: softmax((x · coefᵀ + intercept) / temperature), over
    labels that each belong to a fruit type; a type's probability is the sum over its labels."""

    labels: tuple[str, ...]
    coef: np.ndarray  # (C, k)
    intercept: np.ndarray  # (C,)
    label_types: tuple[str, ...] = ()
    """The type of each label; empty: from the catalog (bundles made before types). ``NOT_OURS``
    for the class of photos showing nothing of ours."""
    temperature: float = 1.0
    """Calibrates the probabilities (fitted on out-of-fold predictions; 1 = as trained)."""
    unsure_below: float = 0.0
    """A type confidence under this is answered ``unsure`` (chosen on validation; 0 = never)."""

    def __post_init__(self) -> None:
        if not self.label_types:
            object.__setattr__(self, "label_types", catalog_types(self.labels))
        if len(self.label_types) != len(self.labels):
            raise ValueError(f"{len(self.label_types)} label types for {len(self.labels)} labels")

    def logits(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float32) @ self.coef.T + self.intercept

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return softmax(self.logits(x) / self.temperature)

    @cached_property
    def types(self) -> tuple[str, ...]:
        """The types of the labels, ``NOT_OURS`` (if present) excluded."""
        return tuple(sorted({t for t in self.label_types if t != NOT_OURS}))

    @cached_property
    def _type_matrix(self) -> np.ndarray:
        """(C, T) one-hot: label → its type among ``types`` (NOT_OURS's row stays zero)."""
        matrix = np.zeros((len(self.labels), len(self.types)), dtype=np.float32)
        index = {t: j for j, t in enumerate(self.types)}
        for i, label_type in enumerate(self.label_types):
            if label_type in index:
                matrix[i, index[label_type]] = 1.0
        return matrix

    @cached_property
    def variety_mask(self) -> np.ndarray:
        """Mask of the labels an answer may name: the catalog's varieties (all labels but
        NOT_OURS when none is in the catalog)."""
        from core.catalog import load_catalog

        catalog = load_catalog()
        mask = np.array([label in catalog for label in self.labels])
        return mask if mask.any() else np.array([t != NOT_OURS for t in self.label_types])

    @cached_property
    def _varieties_of_type(self) -> list[np.ndarray]:
        """For each of ``types``: the indices of its nameable labels (of all of them if it has none)."""
        every = np.where(self.variety_mask)[0]
        of_type = [np.where(self.variety_mask & (self._type_matrix[:, j] > 0))[0] for j in range(len(self.types))]
        return [found if len(found) else every for found in of_type]

    def answers(self, probabilities: np.ndarray) -> list[Answer]:
        """The answer for each row of ``predict_proba``'s output."""
        type_p = probabilities @ self._type_matrix
        not_ours = 1.0 - type_p.sum(axis=1)
        ranked_types = np.argsort(-type_p, axis=1, kind="stable")[:, :TOP_K]
        varieties = np.where(self.variety_mask)[0]
        ranked_varieties = varieties[np.argsort(-probabilities[:, varieties], axis=1, kind="stable")[:, :TOP_K]]
        out = []
        for row, row_types, row_not_ours, top_types, top_varieties in zip(
            probabilities, type_p, not_ours, ranked_types, ranked_varieties
        ):
            best = top_types[0]
            candidates = self._varieties_of_type[best]
            label = candidates[np.argmax(row[candidates])]
            confidence = float(row_types[best])
            out.append(Answer(
                label=self.labels[label],
                confidence=float(row[label]),
                top5=tuple((self.labels[i], float(row[i])) for i in top_varieties),
                fruit_type=self.types[best],
                type_confidence=confidence,
                top5_types=tuple((self.types[j], float(row_types[j])) for j in top_types),
                unsure=bool(confidence < self.unsure_below or row_not_ours > confidence),
            ))  # fmt: skip
        return out


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def catalog_types(labels: Sequence[str]) -> tuple[str, ...]:
    """Each label's type from the catalog; a label the catalog does not know is its own type."""
    from core.catalog import type_of

    def one(label: str) -> str:
        if label == NOT_OURS:
            return NOT_OURS
        try:
            return type_of(label)
        except KeyError:
            return label

    return tuple(one(label) for label in labels)


def fit_classifier(
    x: np.ndarray, labels: Sequence[str], max_iter: int = 3000, regularisation: float = 1.0, tol: float = 1e-6
) -> Classifier:
    """Logistic regression on standardised inputs, the scaling folded into the weights."""
    from sklearn.linear_model import LogisticRegression  # training-only dependency

    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    model = LogisticRegression(max_iter=max_iter, tol=tol, C=regularisation)
    model.fit((x - mean) / scale, np.asarray(labels))
    coef, intercept = model.coef_, model.intercept_
    if len(model.classes_) == 2:  # one logit (of the second class); softmax over [0, logit] is the same model
        coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
    coef = coef / scale
    intercept = intercept - coef @ mean
    return Classifier(tuple(str(c) for c in model.classes_), coef.astype(np.float32), intercept.astype(np.float32))


@dataclass(frozen=True)
class ModelBundle:
    version: str
    featurizer_id: str
    pca: Pca
    classifier: Classifier
    manifest: Manifest | None = None
    """What, when, from which data and how it scored; required to save, always set when loaded."""

    def __post_init__(self) -> None:
        if self.manifest is None:
            return
        actual = (
            self.version,
            self.featurizer_id,
            self.pca.k,
            int(self.pca.mean.shape[0]),
            len(self.classifier.labels),
        )
        m = self.manifest
        described = (m.version, m.featurizer_id, m.pca.k, m.pca.input_dim, m.classifier.classes)
        if described != actual:
            raise ValueError(f"the manifest describes (version, featurizer, k, input dim, classes) {described}, "
                             f"the bundle is {actual}")  # fmt: skip


def _npz(**arrays: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


class ModelStore:
    """Bundles in an S3 bucket, with an atomically moved ``current`` pointer. S3 being away
    raises a DependencyError (``core.s3.s3_dependency``)."""

    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    def _get(self, key: str) -> bytes:
        with s3_dependency("model store"):
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def _put(self, key: str, body: bytes, content_type: str) -> None:
        with s3_dependency("model store"):
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type)

    def save(self, bundle: ModelBundle, make_current: bool = True) -> None:
        if bundle.manifest is None:
            raise ValueError(f"bundle {bundle.version} has no manifest: build one with Manifest.describe")
        prefix = f"bundles/{bundle.version}/"
        pca, clf = bundle.pca, bundle.classifier
        self._put(
            prefix + "pca.npz",
            _npz(mean=pca.mean, components=pca.components, explained_variance_ratio=pca.explained_variance_ratio),
            "application/octet-stream",
        )
        self._put(
            prefix + "classifier.npz",
            _npz(
                labels=np.array(clf.labels),
                coef=clf.coef,
                intercept=clf.intercept,
                label_types=np.array(clf.label_types),
                temperature=np.float64(clf.temperature),
                unsure_below=np.float64(clf.unsure_below),
            ),  # fmt: skip
            "application/octet-stream",
        )
        self._put(prefix + "manifest.json", bundle.manifest.to_json().encode(), "application/json")
        if make_current:
            self.set_current(bundle.version)

    def set_current(self, version: str) -> None:
        """Make ``version`` the bundle the services use; the one it replaces can be rolled back to."""
        pointer = self._pointer()
        previous = pointer.get("previous", [])
        if pointer.get("version") not in (None, version):
            previous = [pointer["version"], *previous][:KEEP_PREVIOUS]
        self._write_pointer(version, previous)

    def rollback(self) -> str:
        """Make the bundle that was current before the current one current again; returns it."""
        pointer = self._pointer()
        previous = pointer.get("previous", [])
        if not previous:
            raise ValueError(f"no earlier current bundle to roll back to in s3://{self.bucket}/{CURRENT_KEY}")
        self._write_pointer(previous[0], previous[1:])
        return previous[0]

    def current_version(self) -> str | None:
        return self._pointer().get("version")

    def previous_versions(self) -> list[str]:
        """The bundles that were current before the current one, newest first."""
        return list(self._pointer().get("previous", []))

    def versions(self) -> list[str]:
        """Every bundle in the store, oldest first (versions sort by time)."""
        found: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix="bundles/", Delimiter="/"
        ):
            found += [p["Prefix"].removeprefix("bundles/").rstrip("/") for p in page.get("CommonPrefixes", [])]
        return sorted(found)

    def _pointer(self) -> dict[str, Any]:
        try:
            return json.loads(self._get(CURRENT_KEY))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return {}
            raise

    def _write_pointer(self, version: str, previous: list[str]) -> None:
        body = json.dumps({"version": version, "previous": previous}).encode()
        self._put(CURRENT_KEY, body, "application/json")

    def load_manifest(self, version: str) -> Manifest:
        try:
            return Manifest.from_json(self._get(f"bundles/{version}/manifest.json"))
        except ValueError as exc:
            raise ValueError(f"bundle {version}: {exc}") from exc

    def load(self, version: str) -> ModelBundle:
        prefix = f"bundles/{version}/"
        manifest = self.load_manifest(version)
        with np.load(io.BytesIO(self._get(prefix + "pca.npz"))) as p:
            pca = Pca(p["mean"], p["components"], p["explained_variance_ratio"])
        with np.load(io.BytesIO(self._get(prefix + "classifier.npz"))) as c:
            # Bundles made before fruit types have neither types nor calibration: catalog types, T = 1, never unsure.
            classifier = Classifier(
                tuple(str(label) for label in c["labels"]), c["coef"], c["intercept"],
                tuple(str(t) for t in c["label_types"]) if "label_types" in c else (),
                float(c["temperature"]) if "temperature" in c else 1.0,
                float(c["unsure_below"]) if "unsure_below" in c else 0.0,
            )  # fmt: skip
        return ModelBundle(version, manifest.featurizer_id, pca, classifier, manifest)


class CurrentBundle:
    """The store's current bundle, re-checked at most every ``refresh_seconds``:
    a newly published bundle is picked up without a restart. While the store is away the
    bundle in use stays in use (re-checked at the same pace)."""

    def __init__(self, store: ModelStore, refresh_seconds: float, clock: Callable[[], float] = time.monotonic):
        self.store = store
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        self.bundle: ModelBundle | None = None
        self.checked_at = -math.inf

    def get(self) -> ModelBundle | None:
        now = self.clock()
        if now - self.checked_at >= self.refresh_seconds:
            self.checked_at = now
            try:
                version = self.store.current_version()
                if version is not None and (self.bundle is None or self.bundle.version != version):
                    self.bundle = self.store.load(version)
                    log.info("model bundle %s is current (PCA k=%d)", version, self.bundle.pca.k)
            except DependencyError as exc:
                if self.bundle is None:
                    raise
                log.warning("cannot check for a new model bundle (%s); keeping %s", exc, self.bundle.version)
        return self.bundle

    def wait(self, stop: Callable[[], bool], log_every_seconds: float = 10.0) -> ModelBundle | None:
        """Block until a bundle is current (records wait in Kafka meanwhile) or ``stop()``."""
        last_log = -math.inf
        while not stop():
            try:
                bundle = self.get()
                problem = f"no current model in s3://{self.store.bucket}; train one with `fruits train`"
            except DependencyError as exc:
                bundle, problem = None, f"waiting for the model store: {exc}"
            if bundle is not None:
                return bundle
            if self.clock() - last_log >= log_every_seconds:
                log.warning("%s", problem)
                last_log = self.clock()
            time.sleep(min(self.refresh_seconds, 1.0))
        return None


class BundlesByVersion:
    """Bundles loaded by version, keeping the few most recently used."""

    def __init__(self, store: ModelStore, size: int = 4) -> None:
        self.store = store
        self.size = size
        self.bundles: OrderedDict[str, ModelBundle] = OrderedDict()

    def get(self, version: str) -> ModelBundle:
        if version in self.bundles:
            self.bundles.move_to_end(version)
            return self.bundles[version]
        try:
            bundle = self.store.load(version)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise RecordError(Reason.UNKNOWN_MODEL_VERSION, f"no model bundle {version!r} in the store") from exc
            raise
        self.bundles[version] = bundle
        if len(self.bundles) > self.size:
            self.bundles.popitem(last=False)
        return bundle

"""Labelled image folders: the Fruits-360 layout (``<split>/<label>/<image>``), read
the same way by the local trainer, the Spark trainer, the demo and the benchmarks."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".hif", ".avif", ".mpo"}


@dataclass(frozen=True)
class LabelledImages:
    paths: list[Path]
    labels: list[str]


def training_dir(data_dir: Path) -> Path:
    """``data_dir`` may be the dataset root (holding ``Training/``) or that folder itself."""
    return data_dir / "Training" if (data_dir / "Training").is_dir() else data_dir


def test_dir_beside(training: Path) -> Path | None:
    """The ``Test`` split next to a ``Training`` folder, if the dataset has one."""
    candidate = training.parent / "Test"
    return candidate if training.name == "Training" and candidate.is_dir() else None


def list_images(split_dir: Path, per_class: int | None = None) -> LabelledImages:
    """Images of a ``<label>/<file>`` folder, label = folder name, in a stable order;
    at most ``per_class`` of each label if given."""
    if not split_dir.is_dir():
        raise FileNotFoundError(f"no such folder: {split_dir}")
    paths, labels = [], []
    for label_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        found = sorted(p for p in label_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        paths.extend(found[:per_class])
        labels.extend([label_dir.name] * len(found[:per_class]))
    if not paths:
        raise ValueError(f"no images in {split_dir}: expected {split_dir}/<label>/<image>.jpg")
    return LabelledImages(paths, labels)


def image_files(paths: Iterable[Path]) -> list[Path]:
    """The image files named, and those inside the folders named (recursively, sorted)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
    return found

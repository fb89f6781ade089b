"""The ONNX featurizer: uint8 RGB images (N, S, S, 3) in, float32 features out.

Normalisation is inside the ONNX graph, so callers feed the output of
``core.imaging.preprocess`` as it is. See ``core/models/MODEL_CARD.md``."""

from __future__ import annotations

import hashlib
import os
from functools import cached_property
from pathlib import Path

import numpy as np
import onnxruntime as ort


def model_id(path: Path) -> str:
    """File stem and sha256 prefix: names the exact weights in every record."""
    return f"{path.stem}@{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"


CHUNK = 8
"""Images per model call: memory grows with the call's batch, throughput does not (measured)."""


class Featurizer:
    def __init__(self, path: Path, threads: int | None = None) -> None:
        """``threads``: onnxruntime intra-op threads; default: one per core."""
        if not path.exists():
            raise FileNotFoundError(f"featurizer model not found: {path} (set FRUITS_FEATURIZER_PATH)")
        self.path = path
        self.threads = threads or os.cpu_count() or 1

    @cached_property
    def session(self) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        # No busy-waiting between ops: on a machine shared with Kafka and the other
        # services, spinning threads burn the CPU the others need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # The memory arena stays on: it keeps one chunk's buffers (CHUNK images bound its size)
        # from call to call. Without it every call mallocs and frees tens of MB that glibc
        # hands back to the kernel and faults in again: 12 % more CPU per image and a resident
        # size wandering by ±70 MB (measured: 1.2 million page faults per 2,735 images, against 4,000).
        return ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])

    @cached_property
    def id(self) -> str:
        return model_id(self.path)

    @property
    def input_size(self) -> int:
        """Side of the square images the model takes (from its ``image`` input: [N, S, S, 3])."""
        (image,) = [i for i in self.session.get_inputs() if i.name == "image"]
        side = image.shape[1]
        if not isinstance(side, int) or image.shape[2] != side:
            raise ValueError(f"{self.path}: input 'image' has shape {image.shape}, expected [N, S, S, 3]")
        return side

    def check_input_size(self, expected: int) -> None:
        """Refuse a model whose input size is not what preprocess makes (a clear error at start)."""
        if self.input_size != expected:
            raise ValueError(
                f"{self.path} takes {self.input_size}×{self.input_size} images but preprocess makes "
                f"{expected}×{expected} (core.imaging.MODEL_INPUT_SIZE): use the matching featurizer"
            )

    def warm_up(self, batch: int = 1) -> None:
        """Create the session and run one batch of ``batch`` images, so the first real batch is
        not slow. A long-running service warms up with its largest batch: the arena then starts
        at its working size (a full chunk) instead of growing to it when the first large batch comes."""
        self(np.zeros((batch, self.input_size, self.input_size, 3), dtype=np.uint8))

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Features of a batch of uint8 images shaped (N, H, W, 3), computed CHUNK images at a time."""
        images = np.ascontiguousarray(images, dtype=np.uint8)
        chunks = [
            self.session.run(["features"], {"image": images[i : i + CHUNK]})[0] for i in range(0, len(images), CHUNK)
        ]
        return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)

"""``make bench-featurizers``: throughput of every ONNX featurizer in ``core/models/``, measured in
one run, relative to MobileNetV2 at 100 px (the reference of issue 8: the chosen featurizer must
keep ≥ 0.2× its throughput on this machine).

Each model runs batches of ``FRUITS_MAX_BATCH_RECORDS`` random uint8 images of its own input
size, on 1 thread (as the featurize service) and on all cores (as the trainer); the models
take turns, round after round, so that a busy moment of a shared machine hits them alike.
"""

from __future__ import annotations

import os
import time

import numpy as np

from core.featurizer import Featurizer
from core.settings import PROJECT_ROOT, get_settings
from tools import tool_parser

MODELS = PROJECT_ROOT / "core" / "models"
REFERENCE = "mobilenetv2_100px"


def images_per_second(featurizer: Featurizer, tensors: np.ndarray, batch: int, seconds: float) -> float:
    """Images per second of ``featurizer`` over ``tensors``, ``batch`` at a time, for about ``seconds``."""
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for start in range(0, len(tensors), batch):
            featurizer(tensors[start : start + batch])
        done += len(tensors)
    return done / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = tool_parser("python -m tools.bench_featurizers", __doc__)
    parser.add_argument("--rounds", type=int, default=3, help="rounds over the models (default 3)")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per model and round (default 4)")
    args = parser.parse_args(argv)
    paths = sorted(MODELS.glob("*.onnx"))
    cores = os.cpu_count() or 1
    rng = np.random.default_rng(0)
    rates: dict[tuple[str, int], list[float]] = {}
    models = {(p.stem, t): Featurizer(p, t) for p in paths for t in sorted({1, cores})}
    batches = {}
    for key, featurizer in models.items():
        featurizer.warm_up()
        size = featurizer.input_size
        batches[key] = rng.integers(0, 256, (get_settings().max_batch_records, size, size, 3), dtype=np.uint8)
    for _ in range(args.rounds):
        for key, featurizer in models.items():
            batch = batches[key]
            rates.setdefault(key, []).append(images_per_second(featurizer, batch, len(batch), args.seconds))
    print(f"{'model':<28} {'MB':>5} {'threads':>7} {'images/s':>9} {'× ' + REFERENCE:>22}")
    for (stem, threads), measured in rates.items():
        rate = float(np.median(measured))
        reference = float(np.median(rates[(REFERENCE, threads)])) if (REFERENCE, threads) in rates else float("nan")
        size_mb = (MODELS / f"{stem}.onnx").stat().st_size / 2**20
        print(f"{stem:<28} {size_mb:5.1f} {threads:>7} {rate:9.0f} {rate / reference:22.2f}")
    print(f"(median of {args.rounds} rounds of {args.seconds:g} s; {cores} cores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

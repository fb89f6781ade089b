"""``make bench``: how close the pipeline gets to its featurizer, in one run.

Prints the featurizer-alone throughput (onnxruntime on preprocessed tensors, the
same batch size as the service), the end-to-end throughput through Kafka and the
five services, their ratio, produce→prediction latency at about half of the
end-to-end maximum, and each service's peak RSS."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from tools.bench_featurizers import images_per_second
from tools.roundtrip import round_trip
from tools import FRUITS360_SAMPLE
from tools.demo import labelled_photos, percentile, prepare, spread
from core.featurizer import Featurizer
from core.imaging import preprocess
from tools.services import start_services, stop_services
from core.settings import Settings, get_settings
from core.datasets import list_images


def featurizer_throughput(settings: Settings, paths: list[Path], seconds: float = 10.0) -> float:
    tensors = np.stack([preprocess(p.read_bytes()) for p in paths])
    featurizer = Featurizer(settings.featurizer_path)  # all cores: the featurizer's best alone
    featurizer.warm_up()
    return images_per_second(featurizer, tensors, settings.max_batch_records, seconds)


def main() -> int:
    parser = argparse.ArgumentParser(prog="fruits-bench", description=__doc__)
    parser.add_argument("--data", type=Path, default=FRUITS360_SAMPLE, help="dataset root (uses its Test split)")
    parser.add_argument("--photos", type=int, default=3000, help="photos for the throughput run (default 3000)")
    parser.add_argument("--latency-seconds", type=float, default=20.0, help="length of the half-load run")
    args = parser.parse_args()
    settings = get_settings().acting_as("admin")  # prepare() provisions and trains, as an operator
    prepare(settings, args.data)
    test = list_images(args.data / "Test")

    alone = featurizer_throughput(settings, spread(test, 1000).paths)
    print(f"featurizer alone: {alone:.0f} images/s")

    services = start_services(settings.state_dir / "logs")
    try:
        warm, _ = labelled_photos(spread(test, 600))  # warms the JVM and the services
        round_trip(settings, warm, progress="warm-up")
        photos, _ = labelled_photos(spread(test, args.photos))
        full = round_trip(settings, photos, progress="full load")
        end_to_end = len(full.predictions) / (max(full.received_at.values()) - min(full.sent_at.values()))
        rate = end_to_end / 2
        count = int(rate * args.latency_seconds)
        photos, _ = labelled_photos(spread(test, count))
        half = round_trip(settings, photos, rate=rate, progress=f"half load ({rate:.0f}/s)")
        rss = {name: service.peak_rss_bytes() for name, service in services.items()}
    finally:
        stop_services(services)

    latencies = half.latencies()
    print()
    print(f"featurizer alone          {alone:8.0f} images/s")
    print(
        f"end to end (5 services)   {end_to_end:8.0f} images/s  ({len(full.predictions)}/{len(full.sent_at)} predictions, "
        f"{full.duplicates()} duplicates)"
    )
    print(f"ratio end-to-end / alone  {end_to_end / alone:8.2f}     (target ≥ 0.80)")
    print(
        f"latency at {rate:.0f}/s         p50 {1000 * percentile(latencies, 0.5):.0f} ms, "
        f"p95 {1000 * percentile(latencies, 0.95):.0f} ms, p99 {1000 * percentile(latencies, 0.99):.0f} ms "
        f"({len(latencies)} photos; target p99 ≤ 150 ms)"
    )
    for name, peak in rss.items():
        print(f"peak RSS {name:<16} {peak / 2**20:8.0f} MB")
    print(f"(target ≤ 400 MB each; machine: {__import__('os').cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

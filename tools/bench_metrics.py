"""``python -m tools.bench_metrics``: what the metrics cost per record, metrics on vs off
in one run.

Two measures:

* **micro**: the stage loop's metric calls for one batch (consumed, processed with
  per-record stage latency, transaction, plus predict's per-prediction metrics), per
  record, on vs off — no broker needed;
* **pipeline**: the five services started alternately with FRUITS_METRICS_ENABLED=true
  and false (ABAB… so machine noise hits both), the same photos sent through each, and
  the CPU seconds the five processes spent per record (from /proc, so other load on a
  shared machine does not count) and the wall-clock throughput.

The pipeline run uses the stack of the environment (``make up``) unless ``--own-stack``,
which starts a throwaway one on free ports (so it never disturbs a running demo).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

from core import metrics
from core.datasets import list_images
from core.photos import new_photo_id
from core.settings import Settings, get_settings
from tools import tool_parser
from tools.roundtrip import round_trip
from tools.services import ServiceProcess, free_port_offset, start_services, stop_services

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def micro(batch_records: int, rounds: int = 20_000) -> dict[tuple[str, bool], float]:
    """Seconds per record of one stage loop's metric calls for a batch, and of predict's
    extra per-prediction metrics; enabled and disabled."""
    now = time.time()
    timestamps = [int((now - 0.05) * 1000)] * batch_records
    received = datetime.now(timezone.utc) - timedelta(milliseconds=80)
    predictions = [
        {"received_at": received, "confidence": 0.93, "label": f"Class {i % 7}"} for i in range(batch_records)
    ]
    cost = {}
    for enabled in (True, False):
        stage = metrics.stage_metrics(f"bench{int(enabled)}", "bench.out", enabled)
        started = time.perf_counter()
        for _ in range(rounds):
            stage.consumed(batch_records)
            stage.processed(batch_records, 0.01, iter(timestamps), now)
            stage.transaction(batch_records, committed=True)
        cost["stage", enabled] = (time.perf_counter() - started) / (rounds * batch_records)
        prediction_metrics = metrics.PredictionMetrics(enabled)
        started = time.perf_counter()
        for _ in range(rounds):
            prediction_metrics.observe(predictions, received)
        cost["predict", enabled] = (time.perf_counter() - started) / (rounds * batch_records)
    return cost


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) a running process has spent so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def cpu_seconds(services: dict[str, ServiceProcess]) -> float:
    return sum(process_cpu_seconds(service.process.pid) for service in services.values())


def pipeline_run(settings: Settings, photos: list[Path], warm: list[Path], enabled: bool, log_dir: Path):
    services = start_services(
        log_dir, env={"FRUITS_METRICS_ENABLED": str(enabled).lower()}, port_offset=free_port_offset(400)
    )
    try:
        round_trip(settings, [(new_photo_id(), p) for p in warm], timeout=60)
        before = cpu_seconds(services)
        result = round_trip(settings, [(new_photo_id(), p) for p in photos], timeout=60)
        cpu = cpu_seconds(services) - before
    finally:
        stop_services(services)
    done = len(result.predictions)
    if result.missing():
        raise RuntimeError(f"{len(result.missing())} photos got no prediction (metrics {'on' if enabled else 'off'})")
    wall = max(result.received_at.values()) - min(result.sent_at.values())
    return cpu / done, done / wall


@contextmanager
def own_stack() -> Iterator[Settings]:
    from tools.stack import kafka_server, seaweedfs_server, start_stack, stop_stack
    from tools.stack.supervisor import free_port_block

    with tempfile.TemporaryDirectory(prefix="fruits-bench-") as tmp:
        settings = Settings(
            state_dir=Path(tmp),
            kafka_bootstrap_servers=f"127.0.0.1:{free_port_block(kafka_server.PORTS)}",
            s3_endpoint_url=f"https://127.0.0.1:{free_port_block(seaweedfs_server.PORTS)}",
        ).acting_as("admin")  # an operator's benchmark: it trains a model, and sends and reads
        try:
            start_stack(settings)
            os.environ["FRUITS_KAFKA_BOOTSTRAP_SERVERS"] = settings.kafka_bootstrap_servers
            os.environ["FRUITS_S3_ENDPOINT_URL"] = settings.s3_endpoint_url
            os.environ["FRUITS_STATE_DIR"] = tmp
            yield settings
        finally:
            stop_stack(settings, purge=True)


def ensure_model(settings: Settings, data: Path) -> None:
    from core.featurizer import Featurizer
    from core.model import ModelStore
    from core.s3 import s3_client
    from training.trainer import TrainingData, train

    store = ModelStore(s3_client(settings.acting_as("admin")), settings.model_bucket)
    if store.current_version() is None:
        print("no current model: training a quick one (30 images per class)")
        store.save(train(TrainingData(data, per_class=30), Featurizer(settings.featurizer_path), evaluate=False))


def main() -> int:
    parser = tool_parser("python -m tools.bench_metrics", __doc__, test_split=True)
    parser.add_argument("--photos", type=int, default=1000, help="photos per measured run (default 1000)")
    parser.add_argument("--rounds", type=int, default=2, help="on/off pairs (default 2)")
    parser.add_argument("--micro-only", action="store_true", help="only the broker-less microbenchmark")
    parser.add_argument("--own-stack", action="store_true", help="start a throwaway stack on free ports")
    args = parser.parse_args()

    for batch in (1, 8, 64):
        cost = micro(batch)
        pipeline = {enabled: 5 * cost["stage", enabled] + cost["predict", enabled] for enabled in (True, False)}
        print(
            f"micro, batch of {batch:2d}: stage loop {cost['stage', True] * 1e6:5.1f} µs/record, predict extras "
            f"{cost['predict', True] * 1e6:4.1f} µs/record → 5 stages {pipeline[True] * 1e6:5.1f} µs/record "
            f"with metrics, {pipeline[False] * 1e6:4.1f} µs without"
        )
    if args.micro_only:
        return 0

    test = list_images(args.data / "Test")
    step = max(1, len(test.paths) // args.photos)
    photos = test.paths[::step][: args.photos]
    warm = test.paths[step // 2 :: step][:200]
    with own_stack() if args.own_stack else _existing() as stack:
        ensure_model(stack, args.data)
        settings = stack.acting_as("client")  # sends photos, reads predictions
        results: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
        logs = Path(tempfile.mkdtemp(prefix="fruits-bench-logs-"))
        print(f"service logs in {logs}")
        for round_ in range(args.rounds):
            for enabled in (True, False) if round_ % 2 == 0 else (False, True):
                cpu, rate = pipeline_run(settings, photos, warm, enabled, logs)
                results[enabled].append((cpu, rate))
                print(
                    f"round {round_ + 1}, metrics {'on ' if enabled else 'off'}: "
                    f"{cpu * 1000:6.2f} CPU ms/record (5 services), {rate:5.0f} records/s",
                    flush=True,
                )
    on_cpu, off_cpu = (statistics.median(c for c, _ in results[e]) for e in (True, False))
    on_rate, off_rate = (statistics.median(r for _, r in results[e]) for e in (True, False))
    print(
        f"\nmedian CPU per record: metrics on {on_cpu * 1000:.2f} ms, off {off_cpu * 1000:.2f} ms "
        f"→ overhead {100 * (on_cpu / off_cpu - 1):+.1f} % (target ≤ 5 %)"
    )
    print(
        f"median throughput:     metrics on {on_rate:.0f}/s, off {off_rate:.0f}/s "
        "(wall clock: on a shared machine mostly the other load)"
    )
    return 0


@contextmanager
def _existing() -> Iterator[Settings]:
    yield get_settings().acting_as("admin")


if __name__ == "__main__":
    raise SystemExit(main())

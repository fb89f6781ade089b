"""``make bench``: how close the pipeline gets to its featurizer, and where the time goes.

Each run measures, with the five services started once and warmed up:

- the featurizer alone (onnxruntime on preprocessed tensors, the service's batch size, all
  cores) and the CPU it spends per image with the service's threads;
- the end-to-end throughput through Kafka and the five services at full load, their ratio,
  and the CPU per record of each service, of the broker and of S3 (from /proc: other load
  on a shared machine does not count), with the broker's CPU per transaction;
- at half of that throughput (or at ``--half-load-rate``, the same for every run and
  variant, so that a change's latency is compared at one rate): the send→prediction
  latency and the waterfall of each hop (``core.hops``: the wait before each stage, its
  processing, its produce, from the hop headers of the predictions; each stage's commit
  wait from its /metrics), over the photos sent after the first prediction came back; the
  start-up before it is its own figure; and the CPU per record again, with the records per
  transaction (fewer than at full load: each transaction's fixed cost in the clients and
  the broker falls on fewer records).

One client producer sends all the bench's photos, warm-ups included, as a long-lived client
(the gateway) keeps its own: a new producer's start-up is not the pipeline's latency.

With ``--profile``, py-spy samples each service (and nothing else) during the first full-load
run and writes a flame graph per service to ``profiles/<time>/<service>.svg`` (git-ignored);
py-spy's own CPU is not counted in the services', but its run's throughput shares the cores with it.

The runs are repeated (``--repeats``, 3 by default), the services started afresh and warmed
up for each; the table shows the median and the spread (min–max) of each figure, and the same
figures, each run's too, are written as JSON to ``--results`` (git-ignored). The featurizer
and the machine (cores, CPU model, load average at the start) are stated: on a shared machine
the spread says how far to trust it.

``--variant NAME:VAR=VALUE,...`` measures a change against the baseline in the same bench: each
repeat runs the baseline and then every variant (the services started with those environment
variables), so that the machine's load falls on all of them alike; a last table compares each
variant's medians with the baseline's (the per-change table of the README comes from it). A
code change is measured the same way, the variant running another checkout's services:
``before:PYTHONSAFEPATH=1,PYTHONPATH=/path/to/checkout,FRUITS_STATE_DIR=$PWD/.stack`` (Python
then imports that checkout instead of this one; the stack stays this one's)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from core.datasets import LabelledImages, list_images
from core.featurizer import Featurizer
from core.imaging import preprocess
from core.settings import PIPELINE_SERVICES, PROJECT_ROOT, Settings, get_settings
from tools import tool_parser
from tools.bench_featurizers import images_per_second
from tools.bench_metrics import process_cpu_seconds
from tools.cli import replicas_of
from tools.client import PhotoSender
from tools.demo import labelled_photos, percentile, prepare, spread
from tools.roundtrip import round_trip
from tools.services import ServiceProcess, free_port_offset, start_services, stop_services
from tools.stack import kafka_server, seaweedfs_server
from tools.stack.supervisor import our_pid

RESULTS_DIR = PROJECT_ROOT / "bench-results"
PROFILES_DIR = PROJECT_ROOT / "profiles"
PROFILE_RATE = 100
"""py-spy's samples per second: enough for a flame graph, little enough for two shared cores."""
BASELINE = "baseline"
PARTS = ("wait", "process", "produce", "commit")
"""The rows of a stage in the waterfall: the hop parts (``core.hops``) and its outputs' commit wait."""


def featurizer_throughput(settings: Settings, paths: list[Path], seconds: float = 10.0) -> tuple[float, float]:
    """Images per second of the featurizer alone (all cores: its best alone), and its CPU
    seconds per image with the featurize service's threads (FRUITS_ONNX_THREADS): the share of
    the service's CPU that is the featurizer's own."""
    tensors = np.stack([preprocess(p.read_bytes()) for p in paths])
    fastest = Featurizer(settings.featurizer_path)
    fastest.warm_up()
    rate = images_per_second(fastest, tensors, settings.max_batch_records, seconds)
    as_served = Featurizer(settings.featurizer_path, settings.onnx_threads)
    as_served.warm_up()
    before, started = _own_cpu_seconds(), time.perf_counter()
    served_rate = images_per_second(as_served, tensors, settings.max_batch_records, seconds / 2)
    images = served_rate * (time.perf_counter() - started)
    return rate, (_own_cpu_seconds() - before) / images


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine() -> dict[str, Any]:
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor() or "unknown",
    )  # fmt: skip
    return {"cores": os.cpu_count(), "cpu_model": model, "load_average_at_start": list(os.getloadavg())}


def scrape(service: ServiceProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The service's samples, ``(name, sorted labels) → value``; empty without /metrics."""
    if service.metrics_port is None:
        return {}
    with urllib.request.urlopen(f"http://127.0.0.1:{service.metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def bucket_quantile(buckets: dict[float, float], q: float) -> float | None:
    """The ``q`` quantile of a histogram's cumulative ``le → count`` (as Prometheus's
    histogram_quantile: linear within the bucket); None without observations."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0
    if total <= 0:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = bound, count
    return lower


def commit_wait_buckets(before: dict, after: dict, stage: str) -> dict[float, float]:
    """The buckets of ``stage``'s commit-wait histogram between two scrapes."""
    found: dict[float, float] = {}
    for (name, labels), value in after.items():
        label = dict(labels)
        if name == "fruits_commit_wait_seconds_bucket" and label.get("stage") == stage:
            found[float(label["le"])] = value - before.get((name, labels), 0.0)
    return found


def committed_transactions(samples: dict) -> float:
    return sum(
        value
        for (name, labels), value in samples.items()
        if name == "fruits_transactions_total" and dict(labels).get("outcome") == "committed"
    )


def cpu_figures(
    prefix: str, before: dict[str, float], after: dict[str, float], records: int, featurizer_ms: float | None = None
) -> dict[str, float]:
    """``prefix.<process>``: CPU ms per record of each process between two ``CpuMeter`` readings,
    and ``prefix.total``; given the featurizer alone's CPU per image, also
    ``prefix.outside_featurizer`` (the total without it)."""
    figures = {f"{prefix}.{name}": 1000 * (after[name] - before[name]) / records for name in before}
    figures[f"{prefix}.total"] = total = sum(figures.values())
    if featurizer_ms is not None:
        figures[f"{prefix}.outside_featurizer"] = total - featurizer_ms
    return figures


def transactions_between(before: dict[str, dict], after: dict[str, dict]) -> float:
    """Transactions the services committed between two scrapes of each."""
    return sum(committed_transactions(after[key]) - committed_transactions(before[key]) for key in after)


class CpuMeter:
    """CPU seconds of the services and of the stack's processes (when this stack runs them)."""

    def __init__(self, settings: Settings, services: dict[str, ServiceProcess]) -> None:
        self.pids = {key: service.process.pid for key, service in services.items()}
        for name in (kafka_server.NAME, seaweedfs_server.NAME):
            if pid := our_pid(settings, name):
                self.pids[name] = pid

    def read(self) -> dict[str, float]:
        return {name: process_cpu_seconds(pid) for name, pid in self.pids.items()}


@contextmanager
def profiled(services: dict[str, ServiceProcess], folder: Path | None) -> Iterator[None]:
    """Sample each service with py-spy (non-blocking: it reads the process's memory without
    pausing it) while the block runs, a flame graph per service in ``folder``; None: nothing."""
    if folder is None:
        yield
        return
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        raise FileNotFoundError("py-spy not found: install the dev extra (`pip install py-spy`)")
    folder.mkdir(parents=True, exist_ok=True)
    recorders = [
        subprocess.Popen(
            [py_spy, "record", "--pid", str(service.process.pid), "--rate", str(PROFILE_RATE), "--nonblocking",
             "--format", "flamegraph", "--output", str(folder / f"{key}.svg")],
            stdout=subprocess.DEVNULL, stderr=(folder / f"{key}.log").open("wb"),
        )
        for key, service in services.items()
    ]  # fmt: skip
    try:
        yield
    finally:
        for recorder in recorders:
            recorder.send_signal(signal.SIGINT)  # py-spy writes its output when interrupted
        for recorder in recorders:
            recorder.wait(60)


def one_run(
    settings: Settings,
    services: dict[str, ServiceProcess],
    sender: PhotoSender,
    test: LabelledImages,
    photos: int,
    latency_seconds: float,
    profiles: Path | None = None,
    half_load_rate: float | None = None,
) -> dict[str, float]:
    """One measurement: the figures of the module docstring, flat (``name → value``); the
    full-load run is profiled into ``profiles`` if given; the latency is measured at
    ``half_load_rate`` photos/s, by default half the end-to-end throughput. ``sender``: the
    client's producer, already warm (see ``tools.roundtrip.round_trip``)."""
    figures: dict[str, float] = {}
    alone, alone_cpu = featurizer_throughput(settings, spread(test, 1000).paths)
    figures["featurizer_alone_per_s"] = alone
    figures["featurizer_alone_cpu_ms_per_image"] = 1000 * alone_cpu

    meter = CpuMeter(settings, services)
    cpu_before, scraped_before = meter.read(), {key: scrape(s) for key, s in services.items()}
    with profiled(services, profiles):
        full = round_trip(settings, labelled_photos(spread(test, photos))[0], progress="full load", sender=sender)
    cpu_after, scraped_after = meter.read(), {key: scrape(s) for key, s in services.items()}
    done = len(full.predictions)
    end_to_end = done / (max(full.received_at.values()) - min(full.sent_at.values()))
    figures |= {"end_to_end_per_s": end_to_end, "ratio": end_to_end / alone, "full_load_missing": len(full.missing())}
    figures["full_load_duplicates"] = full.duplicates()
    featurizer_ms = figures["featurizer_alone_cpu_ms_per_image"]
    figures |= cpu_figures("cpu_ms_per_record", cpu_before, cpu_after, done, featurizer_ms)
    transactions = transactions_between(scraped_before, scraped_after)
    if kafka_server.NAME in cpu_before and transactions:
        kafka_cpu = cpu_after[kafka_server.NAME] - cpu_before[kafka_server.NAME]
        figures["kafka_cpu_ms_per_transaction"] = 1000 * kafka_cpu / transactions
        figures["records_per_transaction"] = 5 * done / transactions

    rate = half_load_rate or end_to_end / 2
    photos_half = labelled_photos(spread(test, int(rate * latency_seconds)))[0]
    cpu_before, scraped_before = meter.read(), {key: scrape(s) for key, s in services.items()}
    half = round_trip(settings, photos_half, rate=rate, progress=f"half load ({rate:.0f}/s)", sender=sender)
    cpu_after, scraped_after = meter.read(), {key: scrape(s) for key, s in services.items()}
    # Transactions shrink at half load (the loops keep up, so each commits what little has come):
    # the per-transaction cost of clients and broker falls on fewer records.
    figures |= cpu_figures("half_load_cpu_ms_per_record", cpu_before, cpu_after, len(half.predictions), featurizer_ms)
    if transactions := transactions_between(scraped_before, scraped_after):
        figures["half_load_records_per_transaction"] = 5 * len(half.predictions) / transactions
    # As `fruits demo`: the time to the first prediction (the services' idle connections) on its own.
    latencies = half.steady_latencies()
    figures["half_load_per_s"] = rate
    if (startup := half.startup_seconds()) is not None:
        figures["half_load_startup_ms"] = 1000 * startup
    for q in (0.5, 0.95, 0.99):
        figures[f"latency_ms.p{round(q * 100)}"] = 1000 * percentile(latencies, q)
    for (stage, part), values in half.hop_seconds(steady=True).items():
        for q in (0.5, 0.99):
            figures[f"hop_ms.{stage}.{part}.p{round(q * 100)}"] = 1000 * percentile(values, q)
    for stage in PIPELINE_SERVICES:
        if stage not in services:
            continue
        buckets = commit_wait_buckets(scraped_before[stage], scraped_after[stage], stage)
        for q in (0.5, 0.99):
            if (value := bucket_quantile(buckets, q)) is not None:
                figures[f"hop_ms.{stage}.commit.p{round(q * 100)}"] = 1000 * value
    return figures


def summarise(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per figure: the median, min and max over the runs that have it."""
    names = dict.fromkeys(name for run in runs for name in run)
    summary = {}
    for name in names:
        values = [run[name] for run in runs if name in run]
        summary[name] = {
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
            "runs": len(values),
        }
    return summary


def print_table(summary: dict[str, dict[str, float]], out: Callable[[str], object] = print) -> None:
    def cell(name: str, digits: int = 0) -> str:
        if name not in summary:
            return "-"
        s = summary[name]
        return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"

    out("figure (median of the runs, min–max)")
    out(f"  featurizer alone              {cell('featurizer_alone_per_s')} images/s")
    out(f"  end to end (5 services)       {cell('end_to_end_per_s')} images/s")
    out(f"  ratio end-to-end / alone      {cell('ratio', 2)}  (target ≥ 0.80)")
    out(f"  half load                     {cell('half_load_per_s')} photos/s")
    out(f"  latency p50 at half load      {cell('latency_ms.p50')} ms")
    out(f"  latency p95                   {cell('latency_ms.p95')} ms")
    out(f"  latency p99                   {cell('latency_ms.p99')} ms  (target ≤ 150 ms)")
    out(f"  start-up at half load         {cell('half_load_startup_ms')} ms to the first prediction (not in the above)")
    out(f"CPU ms per record{'at full load':>28} | at half load")
    for name in summary:
        if name.startswith("cpu_ms_per_record."):
            process = name.split(".", 1)[1]
            out(f"  {process:<28}{cell(name, 2):>20} | {cell('half_load_cpu_ms_per_record.' + process, 2)}")
    out(f"  featurizer alone, per image   {cell('featurizer_alone_cpu_ms_per_image', 2)}  (the service's threads)")
    out("  (outside_featurizer = total − the featurizer alone's CPU per image; target ≤ 3 ms)")
    out(f"  Kafka broker per transaction  {cell('kafka_cpu_ms_per_transaction', 2)} ms "
        f"({cell('records_per_transaction', 1)} records per transaction)")  # fmt: skip
    out(f"  records per transaction at half load: {cell('half_load_records_per_transaction', 1)}")
    out("waterfall at half load, ms: p50 | p99 (median of the runs, min–max)")
    for stage in (*PIPELINE_SERVICES, "client"):
        for part in PARTS:
            name = f"hop_ms.{stage}.{part}"
            if f"{name}.p50" in summary:
                out(f"  {stage:<11}{part:<9}{cell(name + '.p50', 1):>22} | {cell(name + '.p99', 1)}")
    out("  (wait: from the previous stage's produce, its commit included; commit: this stage's outputs,")
    out("   produce → its transaction's commit, from its histogram; client wait: predict's produce → read)")


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    """``NAME:VAR=VALUE,VAR=VALUE`` → (name, environment)."""
    name, _, assignments = text.partition(":")
    env = dict(item.split("=", 1) for item in assignments.split(",") if "=" in item)
    if not name or name == BASELINE or not env or len(env) != len(assignments.split(",")):
        raise argparse.ArgumentTypeError(f"expected NAME:VAR=VALUE[,VAR=VALUE…] with a NAME other than {BASELINE!r}")
    return name, env


COMPARED = (
    ("end_to_end_per_s", "end to end, images/s", 0),
    ("ratio", "ratio", 2),
    ("cpu_ms_per_record.outside_featurizer", "CPU ms/record outside the featurizer", 2),
    ("cpu_ms_per_record.total", "CPU ms/record in all", 2),
    ("latency_ms.p50", "p50 at half load, ms", 0),
    ("latency_ms.p99", "p99 at half load, ms", 0),
)


def print_comparison(summaries: dict[str, dict[str, dict[str, float]]], out: Callable[[str], object] = print) -> None:
    """Each variant's medians beside the baseline's, measured in the same bench."""
    base = summaries[BASELINE]
    out("variants against the baseline (medians of the same bench)")
    for name, summary in summaries.items():
        if name == BASELINE:
            continue
        out(f"  {name}")
        for figure, label, digits in COMPARED:
            if figure in base and figure in summary:
                before, after = base[figure]["median"], summary[figure]["median"]
                change = f"{100 * (after / before - 1):+.0f} %" if before else ""
                out(f"    {label:<38} {before:10.{digits}f} → {after:10.{digits}f}  {change}")


def main() -> int:
    parser = tool_parser("fruits-bench", __doc__, test_split=True)
    parser.add_argument("--photos", type=int, default=3000, help="photos for each full-load run (default 3000)")
    parser.add_argument("--latency-seconds", type=float, default=20.0, help="length of each half-load run")
    parser.add_argument(
        "--half-load-rate", type=float, default=None, metavar="PHOTOS_PER_S",
        help="rate of the latency runs (default: half of each run's end-to-end throughput)",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3, help="runs to take the median of (default 3)")
    parser.add_argument(
        "--variant",
        type=parse_variant,
        action="append",
        default=[],
        metavar="NAME:VAR=VALUE,...",
        help="also measure the services run with these environment variables (repeatable)",
    )
    parser.add_argument(
        "--replicas", action="append", type=replicas_of, default=[], metavar="SERVICE=N",
        help="run N replicas of SERVICE in every configuration (repeatable), e.g. --replicas featurize=2",
    )  # fmt: skip
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help=f"folder of the JSON results ({RESULTS_DIR})")
    parser.add_argument(
        "--profile", action="store_true", help=f"flame graphs of each service in the first run (py-spy; {PROFILES_DIR})"
    )
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.half_load_rate is not None and args.half_load_rate <= 0:
        parser.error("--half-load-rate must be positive")
    configurations = {BASELINE: {}, **dict(args.variant)}
    if len(configurations) != len(args.variant) + 1:
        parser.error("each --variant needs a name of its own")
    started = datetime.now(timezone.utc)
    host = machine()
    settings = get_settings().acting_as("admin")  # prepare() provisions and trains, as an operator
    prepare(settings, args.data)
    featurizer_id = Featurizer(settings.featurizer_path).id
    print(
        f"featurizer {featurizer_id}; machine: {host['cores']} cores, {host['cpu_model']}, load average at start "
        + " ".join(f"{load:.2f}" for load in host["load_average_at_start"])
    )
    test = list_images(args.data / "Test")
    # Metrics ports clear of a demo's (or another bench's) on the same machine.
    port_offset = free_port_offset(0)
    sender = PhotoSender(settings)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in configurations}
    rss: dict[str, dict[str, int]] = {name: {} for name in configurations}
    for index in range(args.repeats):
        for name, env in configurations.items():
            print(f"run {index + 1} of {args.repeats}" + ("" if len(configurations) == 1 else f": {name}"))
            services = start_services(
                settings.state_dir / "logs", env=env, port_offset=port_offset, replicas=dict(args.replicas)
            )
            try:
                # The JVM, the services and this client's producer (kept for the bench, as a client keeps it).
                round_trip(settings, labelled_photos(spread(test, 600))[0], progress="warm-up", sender=sender)
                first = args.profile and index == 0 and name == BASELINE
                profiles = PROFILES_DIR / started.strftime("%Y%m%dT%H%M%SZ") if first else None
                figures = one_run(
                    settings, services, sender, test, args.photos, args.latency_seconds, profiles, args.half_load_rate
                )
                runs[name].append(figures)
                if profiles is not None:
                    print(f"flame graphs: {profiles}")
                for key, service in services.items():
                    rss[name][key] = max(rss[name].get(key, 0), service.peak_rss_bytes())
            finally:
                stop_services(services)

    summaries = {name: summarise(config_runs) for name, config_runs in runs.items()}
    print()
    print(
        f"featurizer {featurizer_id}; {host['cores']} cores ({host['cpu_model']}); load average at start "
        + " ".join(f"{load:.2f}" for load in host["load_average_at_start"])
    )
    for name, summary in summaries.items():
        if len(configurations) > 1:
            environment = " ".join(f"{key}={value}" for key, value in configurations[name].items())
            print(f"\n== {name}" + (f": {environment}" if environment else ""))
        print_table(summary)
        for key, peak in rss[name].items():
            print(f"peak RSS {key:<16} {peak / 2**20:8.0f} MB  (target ≤ 400 MB each)")
    if len(configurations) > 1:
        print()
        print_comparison(summaries)
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / f"bench-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    results = {
        "started_at": started.isoformat(),
        "featurizer": featurizer_id,
        "machine": host,
        "arguments": {"photos": args.photos, "latency_seconds": args.latency_seconds, "repeats": args.repeats,
                      "half_load_rate": args.half_load_rate,
                      "replicas": dict(args.replicas)},
        "configurations": {
            name: {"environment": configurations[name], "summary": summaries[name], "runs": runs[name],
                   "peak_rss_bytes": rss[name]}
            for name in configurations
        },
    }  # fmt: skip
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

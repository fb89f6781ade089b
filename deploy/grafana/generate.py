"""Writes the Grafana dashboards in deploy/grafana/dashboards/ from the definitions below.

    python deploy/grafana/generate.py          # rewrite the JSON files
    python deploy/grafana/generate.py --check  # exit 1 if a file differs from what it would write

Edit this file, not the JSON: tests/unit/test_dashboards.py fails when they disagree, and
tests/integration/test_monitoring.py runs every panel's PromQL on a real Prometheus fed by
the running pipeline. Queries use fixed rate windows (no Grafana variables), so they run
unchanged through Prometheus's HTTP API.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DASHBOARDS = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
"""The datasource provisioned by provisioning/datasources/prometheus.yml."""


@dataclass
class Query:
    expr: str
    legend: str = ""
    format: str = "time_series"


@dataclass
class Panel:
    title: str
    description: str
    queries: list[Query]
    type: str = "timeseries"
    unit: str = "short"
    width: int = 12
    height: int = 8
    options: dict[str, Any] = field(default_factory=dict)


def q(expr: str, legend: str = "", format: str = "time_series") -> Query:
    return Query(" ".join(expr.split()), legend, format)


PIPELINE = (
    "fruits-pipeline",
    "Fruits! — pipeline overview",
    "Do photos flow, how fast, where do they pile up, what fails?",
    [
        Panel("Services up", "1 = Prometheus scrapes the service.", [q('up{job="fruits"}', "{{service}}")],
              type="stat", unit="none", width=24, height=4),
        Panel("Records consumed per stage", "Input throughput of each stage (records/s, 1 min rate).",
              [q("stage:fruits_records_consumed:rate1m", "{{stage}}")], unit="reqps"),
        Panel("Records produced per stage", "Output throughput of each stage (records/s, 1 min rate).",
              [q("stage:fruits_records_produced:rate1m", "{{stage}}")], unit="reqps"),
        Panel("End-to-end latency", "From the photo event to its prediction: p50, p95, p99 over 5 min.",
              [q("job:fruits_end_to_end_latency_seconds:p50_5m", "p50"),
               q("job:fruits_end_to_end_latency_seconds:p95_5m", "p95"),
               q("job:fruits_end_to_end_latency_seconds:p99_5m", "p99")], unit="s"),
        Panel("Stage latency p95", "Per stage, from its input record's timestamp to its output: "
              "waiting in the topic plus processing. The largest one is where photos pile up.",
              [q("stage:fruits_stage_latency_seconds:p95_5m", "{{stage}}")], unit="s"),
        Panel("Hop waterfall p99", "Per stage of a prediction's path (predict records it from the hop headers): "
              "wait before the stage (upstream commit, fetch, queue), its processing, its produce.",
              [q("histogram_quantile(0.99, sum by (hop, part, le) (rate(fruits_hop_seconds_bucket[5m])))",
                 "{{hop}} {{part}}")], unit="s"),
        Panel("Commit wait p99", "Per stage, from producing an output to its transaction's commit: how long the "
              "next stage cannot see it.",
              [q("histogram_quantile(0.99, sum by (stage, le) (rate(fruits_commit_wait_seconds_bucket[5m])))",
                 "{{stage}}")], unit="s"),
        Panel("Consumer lag per partition", "Records waiting in each stage's input partitions.",
              [q("fruits_consumer_lag_records", "{{stage}} {{topic}}[{{partition}}]")], unit="short"),
        Panel("Batch processing p95", "Time to decode, transform and produce one batch.",
              [q("histogram_quantile(0.95, sum by (stage, le) (rate(fruits_batch_processing_seconds_bucket[5m])))",
                 "{{stage}}")], unit="s"),
        Panel("Dead letters by reason", "Records each stage rejected (records/s, 5 min rate).",
              [q("stage_reason:fruits_dead_letters:rate5m", "{{stage}}: {{reason}}")], unit="reqps"),
        Panel("Dead-letter share", "Share of each stage's input sent to the dead-letter topic.",
              [q("stage:fruits_dead_letter_ratio:rate5m", "{{stage}}")], unit="percentunit"),
        Panel("Kafka transactions", "Committed and aborted transactions per second; aborts redo their batch.",
              [q("sum by (stage, outcome) (rate(fruits_transactions_total[5m]))", "{{stage}} {{outcome}}")],
              unit="ops"),
        Panel("Records per transaction", "Average batch size: 1 at low load, up to FRUITS_MAX_BATCH_RECORDS.",
              [q("sum by (stage) (rate(fruits_batch_size_records_sum[5m])) "
                 "/ sum by (stage) (rate(fruits_batch_size_records_count[5m]))", "{{stage}}")], unit="short"),
    ],
)

MODEL = (
    "fruits-model",
    "Fruits! — model",
    "Which model versions serve, how fresh they are, what is predicted, and does confidence drift?",
    [
        Panel("Model versions in use", "One row per stage and model kind; a new version starts a new series.",
              [q("max by (stage, kind, version) (fruits_model_info)", "{{stage}} {{kind}} {{version}}")],
              type="state-timeline", unit="none", width=24),
        Panel("Model age", "Time since the bundle in use was created (PCA updates come from the Spark job).",
              [q("time() - max by (stage, kind) (fruits_model_created_timestamp_seconds)", "{{stage}} {{kind}}")],
              unit="s"),
        Panel("PCA explained variance", "Share of the feature variance the current PCA's k components keep.",
              [q("fruits_pca_explained_variance_ratio", "explained variance")], type="stat", unit="percentunit",
              width=6),
        Panel("PCA components", "k of the current PCA.", [q("fruits_pca_components", "k")], type="stat",
              unit="none", width=6),
        Panel("Predicted classes (top 20, last hour)", "Predictions per class: a class suddenly over- or "
              "under-represented is a drift or input problem.",
              [q("topk(20, sum by (label) (increase(fruits_predictions_total[1h])))", "{{label}}", "table")],
              type="bargauge", unit="short", options={"orientation": "horizontal", "displayMode": "gradient"}),
        Panel("Unsure share", "Share of predictions answered 'unsure' (below the bundle's calibrated "
              "threshold): a jump is drift or a worse model (alert FruitsUnsureShareJump).",
              [q("job:fruits_unsure_share:rate15m", "unsure share (15 min)")], unit="percentunit"),
        Panel("Predicted fruit types (top 20, last hour)", "Confident predictions per fruit type.",
              [q('topk(20, sum by (fruit_type) (increase(fruits_predicted_types_total{unsure="false"}[1h])))',
                 "{{fruit_type}}", "table")],
              type="bargauge", unit="short", options={"orientation": "horizontal", "displayMode": "gradient"}),
        Panel("Predictions per second", "All classes.", [q("sum(rate(fruits_predictions_total[5m]))", "predictions/s")],
              unit="reqps"),
        Panel("Confidence distribution", "Predictions per confidence bucket (5 min rate): mass moving to the "
              "left is the drift signal.",
              [q("sum by (le) (rate(fruits_prediction_confidence_bucket[5m]))", "{{le}}", "heatmap")],
              type="heatmap", unit="short"),
        Panel("Live accuracy from feedback", "Share of users' verdicts (Right / Wrong — it is …, from the web "
              "page) that say the predicted fruit type was right, over the last hour; 0 when every verdict was wrong.",
              [q('sum(rate(fruits_feedback_total{verdict="right"}[1h])) / sum(rate(fruits_feedback_total[1h])) '
                 "or 0 * sum(rate(fruits_feedback_total[1h]))", "accuracy (feedback, 1 h)")],
              unit="percentunit"),
        Panel("Accuracy from feedback per fruit type", "The same per predicted fruit type: a type users correct "
              "often is where the model needs more photos (fruits train --with-feedback).",
              [q('sum by (fruit_type) (rate(fruits_feedback_total{verdict="right"}[1h])) '
                 "/ sum by (fruit_type) (rate(fruits_feedback_total[1h])) "
                 "or 0 * sum by (fruit_type) (rate(fruits_feedback_total[1h]))", "{{fruit_type}}", "table")],
              type="bargauge", unit="percentunit", options={"orientation": "horizontal", "displayMode": "gradient"}),
        Panel("Feedback per second", "Verdicts users give, right and wrong (5 min rate).",
              [q("sum by (verdict) (rate(fruits_feedback_total[5m]))", "{{verdict}}")], unit="reqps"),
        Panel("Confidence median and low-confidence share", "Median confidence, and the share of predictions "
              "under 0.5.",
              [q("histogram_quantile(0.5, sum by (le) (rate(fruits_prediction_confidence_bucket[5m])))", "median"),
               q('sum(rate(fruits_prediction_confidence_bucket{le="0.5"}[5m])) '
                 "/ sum(rate(fruits_prediction_confidence_count[5m]))", "share < 0.5")], unit="percentunit"),
    ],
)

GATEWAY = (
    "fruits-gateway",
    "Fruits! — gateway",
    "Is the web page's HTTP gateway answering, how fast, and how many wait for an answer?",
    [
        Panel("Gateway up", "1 = Prometheus scrapes the gateway.",
              [q('up{job="fruits", service="gateway"}', "gateway")], type="stat", unit="none", width=6, height=4),
        Panel("In-flight requests", "HTTP requests being served now.", [q("fruits_gateway_in_flight", "in flight")],
              type="stat", unit="none", width=6, height=4),
        Panel("SSE clients", "Pages waiting for a prediction on a server-sent event stream.",
              [q("fruits_gateway_sse_clients", "SSE clients")], type="stat", unit="none", width=6, height=4),
        Panel("Error share", "Share of requests answered 5xx (5 min rate).",
              [q('(sum(rate(fruits_gateway_requests_total{status=~"5.."}[5m])) or vector(0)) '
                 "/ sum(rate(fruits_gateway_requests_total[5m]))", "5xx share")],
              type="stat", unit="percentunit", width=6, height=4),
        Panel("Requests by status", "Requests per second by HTTP status (1 min rate): 401 is a bad token, "
              "413/415 a refused photo, 429/503 the gateway shedding load.",
              [q("sum by (status) (rate(fruits_gateway_requests_total[1m]))", "{{status}}")], unit="reqps"),
        Panel("Requests by route", "Requests per second by route and method (1 min rate).",
              [q("sum by (route, method) (rate(fruits_gateway_requests_total[1m]))", "{{method}} {{route}}")],
              unit="reqps"),
        Panel("Latency p50 and p99", "Time to answer a request, all routes (5 min); an SSE stream counts until "
              "its prediction arrives.",
              [q("histogram_quantile(0.5, sum by (le) (rate(fruits_gateway_request_seconds_bucket[5m])))", "p50"),
               q("histogram_quantile(0.99, sum by (le) (rate(fruits_gateway_request_seconds_bucket[5m])))", "p99")],
              unit="s"),
        Panel("Latency p99 by route", "Which route is slow (5 min).",
              [q("histogram_quantile(0.99, sum by (route, le) (rate(fruits_gateway_request_seconds_bucket[5m])))",
                 "{{route}}")], unit="s"),
    ],
)

SPARK = (
    "fruits-spark",
    "Fruits! — Spark streaming job",
    "Does the streaming job keep up, what does it land in the lake, and which PCA did it publish?",
    [
        Panel("Driver up", "1 = Prometheus scrapes the streaming job's driver.",
              [q('up{job="fruits", service="spark"}', "driver")], type="stat", unit="none", width=6, height=4),
        Panel("Published PCA", "Version of the last PCA the job published (refitted from the stream).",
              [q('max by (version) (fruits_model_info{stage="spark", kind="pca"})', "{{version}}")],
              type="stat", unit="none", width=6, height=4, options={"textMode": "name"}),
        Panel("Explained variance of the published PCA", "Share of the feature variance its k components keep.",
              [q('fruits_pca_explained_variance_ratio{service="spark"}', "explained variance")],
              type="stat", unit="percentunit", width=6, height=4),
        Panel("Components of the published PCA", "k of the PCA the job published.",
              [q('fruits_pca_components{service="spark"}', "k")], type="stat", unit="none", width=6, height=4),
        Panel("Micro-batch duration p95", "Trigger execution time of each query's micro-batches (5 min): above "
              "FRUITS_LAKE_TRIGGER_SECONDS, the job falls behind.",
              [q("histogram_quantile(0.95, sum by (query, le) (rate(fruits_spark_batch_duration_seconds_bucket[5m])))",
                 "{{query}}")], unit="s"),
        Panel("Input rate per query", "Rows per second each query read in its last micro-batch.",
              [q("fruits_spark_input_rows_per_second", "{{query}}")], unit="reqps"),
        Panel("Rows written per table", "Rows landed in each lake table per second (5 min rate; a replayed "
              "micro-batch counts again).",
              [q("sum by (table) (rate(fruits_spark_rows_written_total[5m]))", "{{table}}")], unit="reqps"),
        Panel("PCA refits", "Bundles the job refitted in the last day: promoted, or held back as candidates.",
              [q("sum by (outcome) (increase(fruits_pca_refits_total[1d]))", "{{outcome}}")], unit="short"),
    ],
)

RESOURCES = (
    "fruits-resources",
    "Fruits! — resources",
    "How much CPU and memory does each service use?",
    [
        Panel("CPU per service", "CPU seconds per second (1 = one full core).",
              [q('rate(process_cpu_seconds_total{job="fruits"}[1m])', "{{service}}")], unit="percentunit"),
        Panel("Resident memory per service", "RSS of each process.",
              [q('process_resident_memory_bytes{job="fruits"}', "{{service}}")], unit="bytes"),
        Panel("CPU per record", "CPU seconds each stage spends per consumed record.",
              [q('sum by (stage) (label_replace(rate(process_cpu_seconds_total{job="fruits"}[1m]), '
                 '"stage", "$1", "service", "(.*)")) / stage:fruits_records_consumed:rate1m', "{{stage}}")],
              unit="s"),
        Panel("Open file descriptors", "Sockets and files each process holds.",
              [q('process_open_fds{job="fruits"}', "{{service}}")], unit="short"),
        Panel("Python GC collections", "Garbage collections per second, by generation.",
              [q('sum by (service, generation) (rate(python_gc_collections_total{job="fruits"}[5m]))',
                 "{{service}} gen {{generation}}")], unit="ops"),
        Panel("Virtual memory per service", "Address space of each process (onnxruntime and BLAS map a lot).",
              [q('process_virtual_memory_bytes{job="fruits"}', "{{service}}")], unit="bytes"),
    ],
)


def panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    return {
        "id": panel_id,
        "type": panel.type,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": panel.options,
        "targets": [
            {
                "refId": chr(ord("A") + index),
                "datasource": DATASOURCE,
                "expr": query.expr,
                "legendFormat": query.legend,
                "format": query.format,
                **({"instant": True} if query.format == "table" else {}),
            }
            for index, query in enumerate(panel.queries)
        ],
    }


def dashboard_json(uid: str, title: str, description: str, panels: list[Panel]) -> dict[str, Any]:
    laid_out, x, y, row_height = [], 0, 0, 0
    for panel_id, panel in enumerate(panels, start=1):
        if x + panel.width > 24:
            x, y, row_height = 0, y + row_height, 0
        laid_out.append(panel_json(panel, panel_id, x, y))
        x, row_height = x + panel.width, max(row_height, panel.height)
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["fruits"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": []},
        "annotations": {"list": []},
        "links": [{"type": "dashboards", "tags": ["fruits"], "asDropdown": False, "title": "Fruits!"}],
        "panels": laid_out,
    }


def render() -> dict[str, str]:
    """File name → JSON text of every dashboard."""
    return {
        f"{uid}.json": json.dumps(dashboard_json(uid, title, description, panels), indent=2, ensure_ascii=False) + "\n"
        for uid, title, description, panels in (PIPELINE, MODEL, GATEWAY, SPARK, RESOURCES)
    }


def main(argv: list[str]) -> int:
    rendered = render()
    if "--check" in argv:
        stale = [name for name, text in rendered.items()
                 if not (DASHBOARDS / name).is_file() or (DASHBOARDS / name).read_text() != text]
        for name in stale:
            print(f"{DASHBOARDS / name} is not what generate.py writes; run python {__file__}", file=sys.stderr)
        return 1 if stale else 0
    DASHBOARDS.mkdir(exist_ok=True)
    for name, text in rendered.items():
        (DASHBOARDS / name).write_text(text)
        print(f"wrote {DASHBOARDS / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
